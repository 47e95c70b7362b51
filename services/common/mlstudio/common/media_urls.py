"""Signed, expiring media URLs, so `<img src>` and `<video src>` work without a token.

A URL carries `expires` (Unix seconds) and `signature` = HMAC-SHA256 over the path and the
expiry. The gateway lets such paths through without a JWT; the owning service checks the
signature before it serves a byte.
"""
from __future__ import annotations

import hashlib
import hmac
import time

from . import errors


class MediaSigner:
    def __init__(self, key: str, base_url: str, ttl_s: int):
        if not key:
            raise ValueError("MEDIA_SIGNING_KEY is empty")
        self._key = key.encode()
        # The key's HMAC state, prepared once: each signature copies it instead of hashing the
        # key's pads again (a list of 50,000 images signs 50,000 URLs).
        self._prepared = hmac.new(self._key, digestmod=hashlib.sha256)
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s

    def _signature(self, path: str, expires: int) -> str:
        mac = self._prepared.copy()
        mac.update(f"{path}\n{expires}".encode())
        return mac.hexdigest()

    def expiry(self, now: float | None = None) -> int:
        """The `expires` of URLs signed at `now`: the TTL from now, rounded up to a window of a
        tenth of the TTL so URLs of one object stay the same for a while and browsers can cache
        them."""
        now = time.time() if now is None else now
        window = max(1, self.ttl_s // 10)
        return (int(now + self.ttl_s) // window + 1) * window

    def url(self, path: str, now: float | None = None) -> str:
        """Absolute signed URL of `path` (e.g. `/images/632/file`), valid for the TTL."""
        return self.batch(now).url(path)

    def batch(self, now: float | None = None) -> SignedUrls:
        """Signs many paths with one expiry (one request's list): the same URLs `url` gives at
        `now`, without working out the expiry and the query string for each."""
        return SignedUrls(self, self.expiry(now))

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


class SignedUrls:
    """URLs signed with one expiry (see `MediaSigner.batch`). `expires` is an integer and the
    signature hexadecimal, so the query string needs no escaping."""

    def __init__(self, signer: MediaSigner, expires: int):
        self._signer = signer
        self.expires = expires
        self._prefix = signer.base_url
        self._query = f"?expires={expires}&signature="

    def url(self, path: str) -> str:
        return f"{self._prefix}{path}{self._query}{self._signer._signature(path, self.expires)}"
