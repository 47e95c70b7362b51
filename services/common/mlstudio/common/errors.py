"""Domain errors: the one place that decides which HTTP status and gRPC code a failure gets.

Business code raises these; the Flask error handler (`http_app`) and the gRPC interceptor
(`grpc_server`) translate them, and `grpc_client` turns a peer's gRPC status back into the same
exception, so an error keeps its meaning as it crosses services.
"""
from __future__ import annotations

import grpc


class DomainError(Exception):
    """Base of every expected failure. 500 / INTERNAL when raised as is."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL
    code = "internal"
    # What the API docs show for this error (mlstudio.common.openapi).
    example = "internal error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def to_json(self) -> dict:
        return {"message": self.message, "code": self.code}


class InvalidArgument(DomainError):
    """Bad input: HTTP 400, gRPC INVALID_ARGUMENT."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    code = "invalid_argument"
    example = "title is required"


class Unauthenticated(DomainError):
    """No or bad credentials: HTTP 401, gRPC UNAUTHENTICATED."""

    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    code = "unauthenticated"
    example = "Jwt is missing"


class PermissionDenied(DomainError):
    """Authenticated but not allowed: HTTP 403, gRPC PERMISSION_DENIED."""

    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    code = "permission_denied"
    example = "user_id 2 is not the caller"


class NotFound(DomainError):
    """No such resource, or not the caller's: HTTP 404, gRPC NOT_FOUND."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    code = "not_found"
    example = "project 9 not found"


class NotAcceptable(DomainError):
    """A request that makes no sense in the current state (the original's 406): HTTP 406,
    gRPC FAILED_PRECONDITION."""

    http_status = 406
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    code = "not_acceptable"
    example = "the old and the new tag are the same"


class AlreadyExists(DomainError):
    """Conflicts with an existing resource: HTTP 409, gRPC ALREADY_EXISTS."""

    http_status = 409
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    code = "already_exists"
    example = "username 'ann' is taken"


class PayloadTooLarge(DomainError):
    """Body or file over its limit: HTTP 413, gRPC RESOURCE_EXHAUSTED."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "too_large"
    example = "the request body is too large"


class UnsupportedMediaType(DomainError):
    """A file of a type the route does not take: HTTP 415, gRPC INVALID_ARGUMENT."""

    http_status = 415
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    code = "unsupported_media_type"
    example = "notes.txt is not a JPEG, PNG, WebP or BMP image"


class Unprocessable(DomainError):
    """A file of the right type whose content cannot be used: HTTP 422, gRPC INVALID_ARGUMENT."""

    http_status = 422
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    code = "unprocessable"
    example = "photo.jpg cannot be decoded"


class NotImplementedYet(DomainError):
    """A documented feature that this deployment does not offer: HTTP 501, gRPC UNIMPLEMENTED."""

    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    code = "not_implemented"
    example = "this deployment does not offer it"


class Unavailable(DomainError):
    """A dependency is down or too slow: HTTP 503, gRPC UNAVAILABLE."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    code = "unavailable"
    example = "the model service is unavailable"


class DeadlineExceeded(DomainError):
    """The caller stopped waiting (its deadline passed, or it disconnected) before the work was
    done; nothing was stored for it: HTTP 504, gRPC DEADLINE_EXCEEDED."""

    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    code = "deadline_exceeded"
    example = "the request took longer than its deadline; nothing was stored"


def http_table() -> dict[int, type[DomainError]]:
    """The error class of each HTTP status the API answers with (the API docs declare them)."""
    table = {DomainError.http_status: DomainError}
    pending = list(DomainError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        table.setdefault(cls.http_status, cls)
        pending.extend(cls.__subclasses__())
    return dict(sorted(table.items()))


_BY_GRPC_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: NotAcceptable,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: PayloadTooLarge,
    grpc.StatusCode.UNIMPLEMENTED: NotImplementedYet,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


# Trailing metadata that carries a domain error's `code` across a gRPC call, so that the caller
# gets the same error back and can tell a peer that answered from a peer it could not reach.
ERROR_CODE_KEY = "mlstudio-error-code"


def answered_code(error: grpc.RpcError) -> str:
    """The domain error code the peer's own code answered with ('' when the failure came from
    the transport: the peer was unreachable or too slow, or it crashed)."""
    try:
        metadata = error.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - an error without metadata simply carries no code
        return ""
    return next((value for key, value in metadata if key == ERROR_CODE_KEY), "")


def from_grpc_error(error: grpc.RpcError, peer: str) -> DomainError:
    """The domain error a failed call to `peer` stands for: the peer's own error (same class,
    message and code) when it answered with one, else what the transport failure means."""
    code = error.code()
    details = error.details() or code.name.lower()
    answered = answered_code(error)
    if answered:
        cls = DeadlineExceeded if code == grpc.StatusCode.DEADLINE_EXCEEDED else _BY_GRPC_CODE.get(code, DomainError)
        return cls(details, code=answered)
    cls = _BY_GRPC_CODE.get(code, DomainError)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return cls(f"the {peer} service is unavailable: {details}")
    return cls(details)
