"""The API's errors as exceptions: every 4xx/5xx answer `{message, code}` becomes an `ApiError`
(a subclass per status where a caller is likely to tell them apart) that carries the API's own
message and machine code, so callers branch on `code` and show `message` to a person."""
from __future__ import annotations

import requests


class ApiError(Exception):
    """An error answer of the API: `status` (HTTP), `code` (the API's machine word), `message`."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class BadRequest(ApiError):
    """400 (and the original's 406 for a same-name retag): the input is wrong."""


class Unauthorized(ApiError):
    """401: no token, or one that is invalid or expired: log in again."""


class Forbidden(ApiError):
    """403: a `user_id` that is not the caller's."""


class NotFound(ApiError):
    """404: no such resource, or another user's."""


class Conflict(ApiError):
    """409: e.g. a username that is taken."""


class PayloadTooLarge(ApiError):
    """413: a body or a file over the service's limit."""


class UnsupportedFile(ApiError):
    """415 or 422: a file of a type the API does not take, or one it cannot read."""


class Unavailable(ApiError):
    """503: a service or a dependency of it is down; worth retrying later."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 406: BadRequest, 409: Conflict,
    413: PayloadTooLarge, 415: UnsupportedFile, 422: UnsupportedFile, 503: Unavailable,
}


def error_from_response(response: requests.Response) -> ApiError:
    """The exception for an error answer; a body that is not the API's JSON (a proxy's page, an
    empty 502) still gives a sentence naming the status."""
    message, code = None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message, code = body.get("message"), body.get("code")
    if not message:
        reason = response.reason or "error"
        message = f"the server answered {response.status_code} {reason} to {response.request.method} {_path(response.url)}"
    cls = BY_STATUS.get(response.status_code, ApiError)
    return cls(response.status_code, str(message), str(code or f"http_{response.status_code}"))


def _path(url: str) -> str:
    """The URL without its query string: signed URLs carry signatures that need not be shown."""
    return url.split("?", 1)[0]
