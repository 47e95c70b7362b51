"""The error mapping (one row per domain error) through the Flask handler and the gRPC
interceptor, plus the health endpoints every service gets from `make_app`."""
import grpc
import pytest
from flask_restx import Resource

from mlstudio.common import errors, grpc_server, http_app

ROWS = [
    (errors.InvalidArgument, 400, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, 401, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, 403, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFound, 404, grpc.StatusCode.NOT_FOUND),
    (errors.NotAcceptable, 406, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AlreadyExists, 409, grpc.StatusCode.ALREADY_EXISTS),
    (errors.PayloadTooLarge, 413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UnsupportedMediaType, 415, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unprocessable, 422, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotImplementedYet, 501, grpc.StatusCode.UNIMPLEMENTED),
    (errors.Unavailable, 503, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, 504, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def app_raising(exc, ready=True):
    app, api = http_app.make_app("things", title="t", description="d", readiness={"db": lambda: ready})

    @api.route("/boom")
    class Boom(Resource):
        def get(self):
            raise exc

    return app.test_client()


@pytest.mark.parametrize("cls,status,_code", ROWS)
def test_domain_error_becomes_its_http_status_with_json(cls, status, _code):
    response = app_raising(cls("what went wrong")).get("/boom")
    assert response.status_code == status
    assert response.get_json() == {"message": "what went wrong", "code": cls.code}


def test_unknown_error_is_500_with_generic_message():
    response = app_raising(RuntimeError("secret detail")).get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"message": "internal error", "code": "internal"}


def test_unknown_route_is_json_404():
    response = app_raising(RuntimeError()).get("/nothing/here")
    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"


def test_health_and_readiness():
    assert app_raising(RuntimeError()).get("/healthz").status_code == 200
    assert app_raising(RuntimeError(), ready=True).get("/readyz").status_code == 200
    down = app_raising(RuntimeError(), ready=False).get("/readyz")
    assert down.status_code == 503 and down.get_json()["checks"] == {"db": False}


class _Context:
    def set_trailing_metadata(self, metadata):
        self.trailing = metadata

    def abort(self, code, message):
        self.code, self.message = code, message
        raise grpc.RpcError(message)


@pytest.mark.parametrize("cls,_status,code", ROWS)
def test_domain_error_becomes_its_grpc_status(cls, _status, code):
    context = _Context()
    with pytest.raises(grpc.RpcError):
        grpc_server._abort_for(cls("bad"), context, "/x.Y/Z")
    assert (context.code, context.message) == (code, "bad")
    assert context.trailing == ((errors.ERROR_CODE_KEY, cls.code),)


def test_unknown_error_becomes_internal_without_details():
    context = _Context()
    with pytest.raises(grpc.RpcError):
        grpc_server._abort_for(KeyError("secret"), context, "/x.Y/Z")
    assert (context.code, context.message) == (grpc.StatusCode.INTERNAL, "internal error")


class _PeerError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize("cls,_status,code", [row for row in ROWS if row[0] not in (errors.UnsupportedMediaType, errors.Unprocessable, errors.DeadlineExceeded)])
def test_peer_status_comes_back_as_the_same_domain_error(cls, _status, code):
    error = errors.from_grpc_error(_PeerError(code, "peer says no"), "image")
    assert isinstance(error, cls)


def test_peer_timeout_is_unavailable_naming_the_peer():
    error = errors.from_grpc_error(_PeerError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "model")
    assert isinstance(error, errors.Unavailable) and "model service" in error.message
