"""HTTP Range requests (RFC 9110 section 14) for video playback, so browsers can seek.

One range per request is served (206 with Content-Range); a request for several ranges gets the
whole file (200), which the RFC allows and players never ask for anyway. A range that starts past
the end is 416 with `Content-Range: bytes */<size>`. A malformed header is ignored (200), as the
RFC says, and so is a Range whose If-Range validator no longer matches.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiable(Exception):
    """The requested range lies outside the file (answer 416)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def requested_range(header: str | None, size: int, *, if_range: str | None = None, etag: str = "") -> ByteRange | None:
    """The one range to serve, or None for the whole file; RangeNotSatisfiable for 416."""
    if not header:
        return None
    if if_range and if_range.strip().strip('"') != etag:
        return None
    match = _RANGE.match(header)
    if not match:
        return None  # malformed or several ranges: serve everything
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # bytes=-N: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, min(int(last) if last else size - 1, size - 1))
