"""Class-label files, parsed as data and never evaluated.

Three formats are accepted (API.md):

- the original's Python dict literal mapping class name to index, `{'light': 0, 'dark': 1}`:
  parsed with `ast`, and only a dict whose keys are string constants and whose values are
  integer constants is accepted (so `{'a': __import__('os')}` is refused before anything runs);
- one label per line, in index order;
- Teachable Machine's `labels.txt`: `<index> <name>` per line.

The result is the labels in index order plus the file's first index (0, or 1 for Object
Detection API label maps, whose class ids start at 1). Labels become image tags, so they follow
the tag rules: 1-64 characters of letters, digits, space, `_`, `-`, `.`, not a route word.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from mlstudio.common import errors
from mlstudio.common.tags import tag_problem

MAX_LABEL_FILE_BYTES = 1 << 20
MAX_LABELS = 10_000
_TEACHABLE_LINE = re.compile(r"^(\d+)\s+(\S.*)$")


@dataclass(frozen=True)
class LabelFile:
    """Labels in index order; `first_index` is the index the file gave its first label."""

    labels: list[str]
    first_index: int


def _bad(why: str) -> errors.Unprocessable:
    return errors.Unprocessable(f"the label file is not usable: {why}", code="bad_label_file")


def check_label(name: str) -> str:
    """`name` stripped, if it can be an image tag; else 422."""
    label = name.strip()
    problem = tag_problem(label.lower())
    if problem:
        raise _bad(f"label {name[:80]!r} cannot be an image tag: {problem}")
    return label


def _ordered(by_index: dict[int, str]) -> LabelFile:
    if not by_index:
        raise _bad("it lists no labels")
    if len(by_index) > MAX_LABELS:
        raise _bad(f"it lists more than {MAX_LABELS} labels")
    first = min(by_index)
    if first not in (0, 1) or sorted(by_index) != list(range(first, first + len(by_index))):
        raise _bad("class indexes must be consecutive and start at 0 (or 1 for detection label maps)")
    labels = [check_label(by_index[i]) for i in range(first, first + len(by_index))]
    lowered = [label.lower() for label in labels]
    if len(set(lowered)) != len(lowered):
        raise _bad("a label appears twice")
    return LabelFile(labels, first)


def _dict_literal(text: str) -> LabelFile:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise _bad("it starts with '{' but is not a dict literal") from None
    node = tree.body
    if not isinstance(node, ast.Dict):
        raise _bad("it must be a single dict literal such as {'cat': 0, 'dog': 1}")
    by_index: dict[int, str] = {}
    names: set[str] = set()
    for key, value in zip(node.keys, node.values):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            raise _bad("every key must be a quoted class name")
        if not (isinstance(value, ast.Constant) and type(value.value) is int):
            raise _bad(f"the index of {key.value[:80]!r} must be a plain integer")
        if key.value in names or value.value in by_index:
            raise _bad(f"class name or index of {key.value[:80]!r} appears twice")
        names.add(key.value)
        by_index[value.value] = key.value
    return _ordered(by_index)


def _lines(text: str) -> LabelFile:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    matches = [_TEACHABLE_LINE.match(line) for line in lines]
    if lines and all(matches):
        by_index: dict[int, str] = {}
        for match in matches:
            index = int(match.group(1))
            if index in by_index:
                raise _bad(f"index {index} appears twice")
            by_index[index] = match.group(2)
        return _ordered(by_index)
    return _ordered(dict(enumerate(lines)))


def parse_label_file(data: bytes) -> LabelFile:
    """The labels `data` lists, in index order; 422 with the reason when it is not usable."""
    if len(data) > MAX_LABEL_FILE_BYTES:
        raise errors.PayloadTooLarge(f"the label file is larger than {MAX_LABEL_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _bad("it is not UTF-8 text") from None
    if "\x00" in text:
        raise _bad("it is not text")
    if text.lstrip().startswith("{"):
        return _dict_literal(text)
    return _lines(text)

