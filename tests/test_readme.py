"""The README's walk-through runs as written: its fenced `sh` blocks, in order, in one bash,
against a fresh stack, and every `# ->` answer it documents is what the commands above it print.

Only the line `STUDIO=http://127.0.0.1:8000` is pointed at the test's stack (the README says so);
every other line runs verbatim. A documented answer is the text after `# -> `, continued on the
comment lines below it that start with `#` and three or more spaces. It is either JSON, where
`...` stands for "more fields" in an object, "more items" at the end of a list, any value in the
place of a value, and any text inside a string; or plain text, where `...` is any text. The
commands between two answers must print exactly the answer (one JSON value), so a command whose
output is not documented fails the test too.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SECTION = "## Walk-through"
STUDIO_LINE = "STUDIO=http://127.0.0.1:8000"
MARKER = "\x1eANSWER {}\x1e"
ANY = "\x00any"
MORE = "\x00more"
WALK_TIMEOUT_S = 600  # a bound against a hang: the walk-through takes well under a minute


def walkthrough_blocks(readme: str) -> list[str]:
    """The fenced `sh` blocks of the walk-through section, in order."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start:end if end >= 0 else None]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)


def script_and_answers(blocks: list[str], studio: str) -> tuple[str, list[str]]:
    """One bash script of the blocks, each answer comment replaced by a marker that it prints,
    and the answers in order."""
    lines, answers = [], []
    for line in "\n".join(blocks).splitlines():
        if line.startswith("# -> "):
            answers.append(line.removeprefix("# -> "))
            lines.append(f"printf '{MARKER.format(len(answers) - 1)}'")
        elif answers and re.match(r"#\s{3,}\S", line) and lines[-1].startswith("printf '\x1e"):
            answers[-1] += " " + line[1:].strip()
        else:
            lines.append(line)
    script = "\n".join(lines) + "\n"
    assert script.count(f"\n{STUDIO_LINE}\n") + script.startswith(STUDIO_LINE + "\n") == 1, \
        f"the walk-through no longer sets {STUDIO_LINE} once: update the README's note and this test"
    return script.replace(STUDIO_LINE, f"STUDIO={studio}", 1), answers


def relaxed_json(text: str):
    """The documented answer as JSON, with ANY and MORE where it says `...`; None when it is not
    JSON (plain text)."""
    out, stack, in_string, i = [], [], False, 0
    while i < len(text):
        char = text[i]
        if in_string:
            if char == "\\":
                out.append(text[i:i + 2])
                i += 2
                continue
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}":
            stack and stack.pop()
        elif text.startswith("...", i):
            previous = "".join(out).rstrip()[-1:]
            if previous == ":" or not stack:
                out.append(json.dumps(ANY))
            elif stack[-1] == "{":
                out.append(f"{json.dumps(MORE)}: null")
            else:
                out.append(json.dumps(MORE))
            i += 3
            continue
        out.append(char)
        i += 1
    try:
        return json.loads("".join(out))
    except ValueError:
        return None


def _text_matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual, flags=re.S) is not None


def mismatch(expected, actual, where: str = "answer") -> str | None:
    """Why `actual` is not the documented `expected` (relaxed JSON), or None when it is."""
    if expected == ANY:
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {actual!r}"
        keys = set(expected) - {MORE}
        if MORE not in expected and set(actual) != keys:
            return f"{where}: expected exactly the fields {sorted(keys)}, got {sorted(actual)}"
        for key in sorted(keys):
            if key not in actual:
                return f"{where}: no field {key!r} in {actual!r}"
            why = mismatch(expected[key], actual[key], f"{where}.{key}")
            if why:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{where}: expected a list, got {actual!r}"
        items = [item for item in expected if item != MORE]
        if len(actual) < len(items) or (MORE not in expected and len(actual) != len(items)):
            return f"{where}: expected {len(items)}{' or more' if MORE in expected else ''} items, got {len(actual)}"
        for index, item in enumerate(items):
            why = mismatch(item, actual[index], f"{where}[{index}]")
            if why:
                return why
        return None
    if isinstance(expected, str) and isinstance(actual, str) and "..." in expected:
        return None if _text_matches(expected, actual) else f"{where}: {actual!r} is not {expected!r}"
    if type(expected) is not type(actual) or expected != actual:
        return f"{where}: expected {expected!r}, got {actual!r}"
    return None


def check_answer(documented: str, printed: str) -> str | None:
    """Why the `printed` output is not the `documented` answer, or None."""
    expected = relaxed_json(documented)
    if expected is None:
        return None if _text_matches(documented.strip(), printed.strip()) else f"printed {printed!r}"
    try:
        actual = json.loads(printed)
    except ValueError:
        return f"printed {printed!r}, which is not one JSON value"
    return mismatch(expected, actual)


def test_the_walkthrough_runs_as_written_and_answers_as_documented(private_stack, tmp_path):
    stack = private_stack().start()
    blocks = walkthrough_blocks(README.read_text())
    assert len(blocks) >= 4, "the walk-through's sh blocks were not found"
    script, answers = script_and_answers(blocks, stack.url)
    assert len(answers) >= 10
    (tmp_path / "walkthrough.sh").write_text(script)
    # From the repository's root, as the README says; -e: a failing command stops it there.
    run = subprocess.run(["bash", "-e", "-o", "pipefail", str(tmp_path / "walkthrough.sh")], cwd=REPO,
                         capture_output=True, text=True, timeout=WALK_TIMEOUT_S, check=False)
    printed = re.split("\x1eANSWER \\d+\x1e", run.stdout)
    problems = []
    for index, answer in enumerate(answers):
        if index >= len(printed) - 1:
            problems.append(f"answer {index + 1} ({answer[:60]}...): not reached")
            continue
        why = check_answer(answer, printed[index])
        if why:
            problems.append(f"answer {index + 1} ({answer[:60]}...): {why}")
    if printed[-1].strip():
        problems.append(f"printed after the last answer: {printed[-1]!r}")
    assert run.returncode == 0 and not problems, (
        f"exit {run.returncode}\n" + "\n".join(problems) + f"\nstderr:\n{run.stderr[-3000:]}\nstack:\n{stack.log_tail(20)}")


# The checker itself: what it lets through and what it does not.

@pytest.mark.parametrize(("documented", "printed"), [
    ('{"id": 1, ...}', '{"id": 1, "title": "x"}'),
    ('{"id": 1, "url": "http://.../images/1/file?expires=..."}', '{"id": 1, "url": "http://h:1/images/1/file?expires=9&s=1"}'),
    ('[{"id": 3, ...}, ...]', '[{"id": 3, "a": 1}, {"id": 4}]'),
    ('{"score": ..., "x": [1, 2]}', '{"score": 0.98, "x": [1, 2]}'),
    ('206 ...', '206 100\n'),
])
def test_documented_answers_match(documented, printed):
    assert check_answer(documented, printed) is None


@pytest.mark.parametrize(("documented", "printed"), [
    ('{"id": 1, ...}', '{"id": 2, "title": "x"}'),
    ('{"id": 1}', '{"id": 1, "title": "x"}'),
    ('[{"id": 3, ...}]', '[{"id": 3}, {"id": 4}]'),
    ('{"message": "success"}', '{"message": "project 1 not found", "code": "not_found"}'),
    ('{"id": 1, ...}', '{"id": 1}{"id": 2}'),
    ('{"id": 1, ...}', ''),
    ('{"n": 1}', '{"n": true}'),
])
def test_wrong_answers_are_caught(documented, printed):
    assert check_answer(documented, printed) is not None


def test_the_script_keeps_every_command_and_points_only_studio_elsewhere():
    blocks = ["STUDIO=http://127.0.0.1:8000\ncurl -s $STUDIO/a\n# -> {\"a\": 1,\n#     \"b\": 2}\necho hi  # -> not an answer"]
    script, answers = script_and_answers(blocks, "http://127.0.0.1:5")
    assert answers == ['{"a": 1, "b": 2}']
    assert script.rstrip("\n").split("\n") == ["STUDIO=http://127.0.0.1:5", "curl -s $STUDIO/a", "printf '\x1eANSWER 0\x1e'",
                                   "echo hi  # -> not an answer"]
