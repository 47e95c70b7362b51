"""Signed, expiring media URLs, so `<img src>` and `<video src>` work without a token.

A URL carries `expires` (Unix seconds) and `signature` = HMAC-SHA256 over the path and the
expiry. The gateway lets such paths through without a JWT; the owning service checks the
signature before it serves a byte.
"""
from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse

from . import errors


class MediaSigner:
    def __init__(self, key: str, base_url: str, ttl_s: int):
        if not key:
            raise ValueError("MEDIA_SIGNING_KEY is empty")
        self._key = key.encode()
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, path: str, now: float | None = None) -> str:
        """Absolute signed URL of `path` (e.g. `/images/632/file`), valid for the TTL.

        Expiry is rounded up to a window of a tenth of the TTL so URLs of one object stay the
        same for a while and browsers can cache them."""
        now = time.time() if now is None else now
        window = max(1, self.ttl_s // 10)
        expires = (int(now + self.ttl_s) // window + 1) * window
        query = urllib.parse.urlencode({"expires": expires, "signature": self._signature(path, expires)})
        return f"{self.base_url}{path}?{query}"

    def verify(self, path: str, expires: str | None, signature: str | None, now: float | None = None) -> None:
        """Raises PermissionDenied unless the signature matches `path` and has not expired."""
        now = time.time() if now is None else now
        if not expires or not signature:
            raise errors.PermissionDenied("this media URL is not signed", code="signature_missing")
        try:
            expiry = int(expires)
        except ValueError:
            raise errors.PermissionDenied("this media URL's expiry is malformed", code="signature_invalid") from None
        if not hmac.compare_digest(self._signature(path, expiry), signature):
            raise errors.PermissionDenied("this media URL's signature is not valid", code="signature_invalid")
        if expiry < now:
            raise errors.PermissionDenied("this media URL has expired", code="signature_expired")
