"""Label files: the three formats, parsed as data; code and malformed files are refused."""
import pytest

from mlstudio.common import errors
from model_service.labels import parse_label_file


@pytest.mark.parametrize("text, labels, first", [
    ("{'light': 0, 'dark': 1}", ["light", "dark"], 0),
    ('{"dark": 1,\n "light": 0}\n', ["light", "dark"], 0),
    ("{'bottle': 1, 'can': 2}", ["bottle", "can"], 1),
    ("cat\ndog\n\nbird\n", ["cat", "dog", "bird"], 0),
    ("  cat  \r\ndog", ["cat", "dog"], 0),
    ("0 cat\n1 dog\n", ["cat", "dog"], 0),
    ("1 Class 2\n0 Class 1\n", ["Class 1", "Class 2"], 0),
    ("\ufeff0 cat\n1 dog", ["cat", "dog"], 0),
    ("1\n2\n3", ["1", "2", "3"], 0),
])
def test_accepted_formats(text, labels, first):
    parsed = parse_label_file(text.encode())
    assert parsed.labels == labels and parsed.first_index == first


@pytest.mark.parametrize("text", [
    "{'light': __import__('os').system('echo hacked'), 'dark': 1}",
    "{'light': 0, 'dark': (lambda: 1)()}",
    "{'light': 0} if True else {}",
    "{**{'a': 0}}",
    "__import__('os').system('echo hacked')",
    "import os\nos.system('echo hacked')",
    "exec('print(1)')",
    "{'light': 0, 'dark': True}",
    "{0: 'light', 1: 'dark'}",
    "{'light': 0, 'dark': 1.0}",
    "{'light': 0, 'light': 1}",
    "{'light': 0, 'dark': 0}",
    "{'light': 0, 'dark': 2}",
    "{'light': 2, 'dark': 3}",
    "{'light': 0, 'dark': 1",
    "0 cat\n0 dog",
    "cat\nCat",
    "all\ncat",
    "cat\n..",
    "a/b\ncat",
    "x" * 65,
    "",
    "\n \n",
])
def test_refused_files(text):
    with pytest.raises(errors.Unprocessable):
        parse_label_file(text.encode())


def test_binary_and_huge_files_are_refused():
    with pytest.raises(errors.Unprocessable, match="UTF-8"):
        parse_label_file(b"\xff\xfe\x00c\x00a")
    with pytest.raises(errors.PayloadTooLarge):
        parse_label_file(b"a\n" * (1 << 20))


def test_refusal_says_why():
    with pytest.raises(errors.Unprocessable, match="must be a plain integer"):
        parse_label_file(b"{'light': __import__('os').getpid()}")

