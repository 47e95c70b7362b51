"""Integers that come from a request (ids in the path, ids and paging in the query or a form),
parsed in one place.

Ids travel as int64 in gRPC and are stored as int64 in MongoDB, so an id beyond 2^63 - 1 cannot
name anything; passed on, it crashes the protobuf encoder ("Value out of range") or the BSON
encoder ("can only handle up to 8-byte ints"). Here it is refused where it enters: a path id out
of range answers 404 (it names no resource), a query or form parameter out of range answers 400
with a sentence saying which values are allowed.

Only plain ASCII digits are numbers here: no sign, space, underscore or other script's digits,
which Python's `int()` would all accept.
"""
from __future__ import annotations

import re

from werkzeug.exceptions import NotFound
from werkzeug.routing import BaseConverter

from . import errors

MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")
# Longer than any int64 needs (19 digits, plus leading zeros a client may send): never handed to
# int(), whose cost grows with the length and which Python caps at 4300 digits anyway.
_MAX_DIGITS = 64


def _value(raw: str) -> int | None:
    """`raw` as a non-negative integer if it is plain digits that fit an int64, else None."""
    if len(raw) > _MAX_DIGITS or not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


def as_id(raw: str) -> int | None:
    """`raw` as an id (plain digits, 1 to 2^63 - 1), or None."""
    value = _value(raw)
    return value if value is not None and value >= 1 else None


def parse_int64(name: str, raw: str | None, *, minimum: int = 1, required: bool = True, where: str = "query parameter") -> int | None:
    """An integer request parameter between `minimum` and 2^63 - 1; None when absent (or empty)
    and not required. InvalidArgument (400) names the parameter and the allowed range."""
    if raw is None or raw == "":
        if required:
            raise errors.InvalidArgument(f"{where} {name} is required", code=f"invalid_{name}")
        return None
    value = _value(raw)
    if value is None or value < minimum:
        raise errors.InvalidArgument(f"{name} must be an integer between {minimum} and {MAX_ID}", code=f"invalid_{name}")
    return value


def parse_id(name: str, raw: str | None, *, required: bool = True, where: str = "query parameter") -> int | None:
    """An id parameter (1 to 2^63 - 1); see `parse_int64`."""
    return parse_int64(name, raw, minimum=1, required=required, where=where)


class IdConverter(BaseConverter):
    """The `int` path converter of every service: in this API an integer in a path is always an
    id, so it matches digits and answers 404 for a number that cannot be an id (0, or beyond
    int64) instead of passing it to the core.

    Raising NotFound (rather than ValidationError) stops the matching there: `/images/<huge>`
    must not fall through to `/images/<tag>`, and the 404 gets a message."""

    regex = r"[0-9]+"
    weight = 50  # werkzeug's own int converter's weight: static parts still win
    part_isolating = True

    def to_python(self, value: str) -> int:
        number = as_id(value)
        if number is None:
            raise NotFound(f"no such resource: ids are integers between 1 and {MAX_ID}")
        return number

    def to_url(self, value) -> str:
        return str(int(value))
