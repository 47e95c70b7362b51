"""Messages for people, from text that may hold server paths (TensorFlow's, Keras's and the OS's
error texts name the files they failed on: a temporary directory, the data directory).

Error messages never show a server path: `without_paths` keeps each path's last component (the
file name a user can recognise, `saved_model.pb`) and drops the directories before it.
"""
from __future__ import annotations

import re

# An absolute path (not the middle of a word, a fraction or a URL), or a file:// URL.
_PATH = re.compile(r"file://\S+|(?<![\w.~/:\\])(?:/[^\s'\"`,;:()\[\]{}<>|]+)+")


def _last_component(match: re.Match) -> str:
    parts = [part for part in match.group(0).removeprefix("file://").split("/") if part]
    return parts[-1] if parts else "/"


def without_paths(text: str) -> str:
    """`text` with every absolute path replaced by its last component."""
    return _PATH.sub(_last_component, text)
