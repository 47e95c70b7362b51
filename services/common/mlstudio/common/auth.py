"""Who is calling: the identity the gateway verified, or the legacy `user_id` parameter.

Envoy's `jwt_authn` filter verifies the token (RS256, keys from the user service's JWKS) and
forwards its payload in `x-jwt-payload`; the gateway removes any client-supplied copy of that
header first, so a service can trust it. With `AUTH_REQUIRED=false` (the legacy mode for
trusted networks) a request without a token names its user with the `user_id` query parameter;
one that names no user either, on a route that names a resource by its id alone (the original
React UI's `GET /projects/45`, `DELETE /images/632`, ...), acts for that resource's owner, as
the original backend (which had no authorization) let it. The route says how to find the owner
(`owner_of`); the rule of when to use it lives here only.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping

from . import errors, ids

PAYLOAD_HEADER = "x-jwt-payload"


def decode_payload(value: str) -> dict:
    padded = value + "=" * (-len(value) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        raise errors.Unauthenticated("the verified token payload is malformed") from None


def caller_id(headers: Mapping[str, str], args: Mapping[str, str], auth_required: bool,
              owner_of: Callable[[], int] | None = None) -> int:
    """The calling user's id.

    With a verified token, a `user_id` parameter that differs from it answers 403. Without one,
    401 unless the legacy mode is on, where `user_id` names the caller; when it is absent too,
    `owner_of` (given by routes that name one resource by id) says who owns that resource and
    raises NotFound when there is none. A route without `owner_of` answers 400."""
    claimed = ids.parse_id("user_id", args.get("user_id"), required=False)
    payload = headers.get(PAYLOAD_HEADER)
    if payload:
        subject = decode_payload(payload).get("sub")
        user = ids.as_id(str(subject)) if isinstance(subject, (str, int)) and not isinstance(subject, bool) else None
        if user is None:
            raise errors.Unauthenticated("the token has no valid subject")
        if claimed is not None and claimed != user:
            raise errors.PermissionDenied(f"user_id {claimed} is not the authenticated user")
        return user
    if auth_required:
        raise errors.Unauthenticated("authentication required: send Authorization: Bearer <token>")
    if claimed is None:
        if owner_of is not None:
            return owner_of()
        raise errors.InvalidArgument("query parameter user_id is required")
    return claimed
