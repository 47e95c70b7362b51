"""Serving stored media (images, videos, model files) behind signed URLs: one response for all.

`media_response` answers with the file's type, an ETag (304 when the browser has it), caching
for as long as the signed URL is valid (bytes never change under an id), and HTTP Range
requests (RFC 9110 section 14) so video players can seek.

One range per request is served (206 with Content-Range); a request for several ranges gets the
whole file (200), which the RFC allows and players never ask for anyway. A range that cannot be
served (it starts at or past the end, `bytes=-0`, any range of an empty file) is 416 with
`Content-Range: bytes */<size>` and a JSON error body like every other error. A malformed header
is ignored (200), as the RFC says, and so is a Range whose If-Range validator no longer matches.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Response, request

_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$", re.IGNORECASE)
# Positions beyond any file's size are all alike; reading them as this keeps int() away from
# thousands of digits (which it refuses).
_BEYOND_ANY_FILE = 2**63


def _position(digits: str) -> int:
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 19 else _BEYOND_ANY_FILE


@dataclass(frozen=True)
class MediaFile:
    """What a signed media route answers with: where the bytes are, and their headers."""

    key: str
    content_type: str
    size: int
    etag: str  # without quotes
    max_age_s: int
    download_name: str | None = None  # set: the browser saves the file under this name


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
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, size - suffix), size - 1)
    start = _position(first)
    if last and _position(last) < start:
        return None  # syntactically invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, min(_position(last) if last else size - 1, size - 1))


def not_satisfiable(size: int, headers: dict[str, str]) -> Response:
    """416 for a Range outside a file of `size` bytes: the size in Content-Range (so a player can
    ask again) and the API's JSON error."""
    body = {"message": f"the requested range lies outside the file, which has {size} bytes", "code": "range_not_satisfiable"}
    return Response(json.dumps(body), status=416, mimetype="application/json",
                    headers={**headers, "Content-Range": f"bytes */{size}"})


def media_response(media: MediaFile, read: Callable[[int, int | None], Iterator[bytes]]) -> Response:
    """The HTTP answer for `media`; `read(start, length)` yields its bytes (length None: to the end)."""
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{media.etag}"',
        "Cache-Control": f"private, max-age={media.max_age_s}",
        "X-Content-Type-Options": "nosniff",
    }
    if media.download_name:
        headers["Content-Disposition"] = f'attachment; filename="{media.download_name}"'
    try:
        wanted = requested_range(request.headers.get("Range"), media.size, if_range=request.headers.get("If-Range"), etag=media.etag)
    except RangeNotSatisfiable:
        return not_satisfiable(media.size, headers)
    if wanted is None and request.if_none_match.contains_weak(media.etag):
        return Response(status=304, headers=headers)
    if wanted is None:
        body, status, length = read(0, None), 200, media.size
    else:
        body, status, length = read(wanted.start, wanted.length), 206, wanted.length
        headers["Content-Range"] = wanted.content_range(media.size)
    headers["Content-Length"] = str(length)
    return Response(body, status=status, headers=headers, mimetype=media.content_type, direct_passthrough=True)
