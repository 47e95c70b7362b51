"""Tag (image type) rules of API.md, in one place for every service (images, model labels,
training class folders).

A tag names a collection of a project's images and appears in URLs (`/images/<tag>`) and, for
training, as a folder name; so it is lower-cased and stripped, 1-64 characters of letters,
digits, space, `_`, `-`, `.`, never `.` or `..`, and never one of the words that are routes of
their own. A person's tag that breaks a rule is refused; a model's label is made to fit instead,
so one odd class name cannot fail a whole batch of predictions.
"""
from __future__ import annotations

import re

from . import errors

MAX_LENGTH = 64
# Static routes under /images; a tag with one of these names could never be addressed.
RESERVED = frozenset({"all", "type", "predict", "byvideo"})
# What a Detection image with nothing detected is filed under.
NO_DETECTION_TAG = "unlabeled"

# \w is Unicode-aware: letters and digits of any script, and '_'.
_DISALLOWED_CHAR = re.compile(r"[^\w .\-]")


def tag_problem(tag: str) -> str | None:
    """Why `tag` (already normalised) is not a valid tag, or None."""
    if not tag:
        return "a tag must not be empty"
    if len(tag) > MAX_LENGTH:
        return f"a tag has at most {MAX_LENGTH} characters"
    if _DISALLOWED_CHAR.search(tag):
        return "a tag may only contain letters, digits, spaces, '_', '-' and '.'"
    if tag in (".", ".."):
        return "a tag cannot be '.' or '..'"
    if tag in RESERVED:
        return f"{tag!r} is reserved (it is a route of its own)"
    return None


def normalize_tag(raw) -> str:
    """The tag a person asked for, lower-cased and stripped; InvalidArgument when it breaks a rule."""
    if not isinstance(raw, str):
        raise errors.InvalidArgument("a tag is required", code="invalid_tag")
    tag = raw.strip().lower()
    problem = tag_problem(tag)
    if problem:
        raise errors.InvalidArgument(f"invalid tag {raw!r}: {problem}", code="invalid_tag")
    return tag


def tag_from_label(label: str) -> str:
    """A valid tag for a model's class label: odd characters become '_', too long is cut, and a
    reserved or empty result gets a suffix."""
    tag = _DISALLOWED_CHAR.sub("_", (label or "").strip().lower())[:MAX_LENGTH].strip()
    if not tag or tag in (".", ".."):
        return NO_DETECTION_TAG
    if tag in RESERVED:
        return f"{tag}_"
    return tag
