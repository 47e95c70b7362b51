"""A request's deadline across a gRPC call: a peer's own error comes back as itself and is not
retried, an unreachable peer is retried only while the request's deadline leaves time, and no
call starts once the caller stopped waiting."""
import grpc
import pytest

from mlstudio.common import errors
from mlstudio.common.deadlines import CLIENT_DISCONNECTED, Deadline
from mlstudio.common.grpc_client import Client


class _Failure(grpc.RpcError):
    def __init__(self, code, details, error_code=""):
        self._code, self._details = code, details
        self._trailing = ((errors.ERROR_CODE_KEY, error_code),) if error_code else ()

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


class _Method:
    """A stub method that fails with `failure` and records each call's timeout."""

    def __init__(self, failure=None):
        self.failure = failure
        self.timeouts = []

    def __call__(self, request, timeout, metadata):
        self.timeouts.append(timeout)
        if self.failure:
            raise self.failure
        return "answer"


def client():
    made = Client("127.0.0.1:1", lambda channel: None, deadline_s=60)
    made.peer = "model"
    return made


def test_a_peer_that_answered_unavailable_is_not_asked_again_and_its_error_comes_back_whole():
    method = _Method(_Failure(grpc.StatusCode.UNAVAILABLE, "TensorFlow Serving is not reachable", "tfserving_unreachable"))
    with pytest.raises(errors.Unavailable) as caught:
        client()._call(method, None, idempotent=True)
    assert len(method.timeouts) == 1
    assert (caught.value.message, caught.value.code) == ("TensorFlow Serving is not reachable", "tfserving_unreachable")


def test_an_unreachable_peer_is_retried(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)
    method = _Method(_Failure(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"))
    with pytest.raises(errors.Unavailable) as caught:
        client()._call(method, None, idempotent=True)
    assert len(method.timeouts) == 3 and "the model service is unavailable" in caught.value.message


def test_calls_fit_in_the_request_deadline_and_none_starts_after_it():
    now = {"t": 0.0}
    deadline = Deadline(5, clock=lambda: now["t"])
    method = _Method()
    client()._call(method, None, deadline=deadline)
    assert method.timeouts == [5]  # not the client's 60 s
    now["t"] = 5
    with pytest.raises(errors.DeadlineExceeded):
        client()._call(method, None, idempotent=True, deadline=deadline)
    assert len(method.timeouts) == 1


def test_no_retry_once_the_client_left(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)
    connected = {"yes": True}

    def fail_and_hang_up(*_args, **_kwargs):
        connected["yes"] = False
        raise _Failure(grpc.StatusCode.UNAVAILABLE, "failed to connect")

    calls = []
    with pytest.raises(errors.DeadlineExceeded):
        client()._call(lambda *a, **k: calls.append(1) or fail_and_hang_up(), None, idempotent=True,
                       deadline=Deadline(None, gone=lambda: not connected["yes"]))
    assert calls == [1]


def test_the_peers_own_deadline_error_is_deadline_exceeded():
    error = errors.from_grpc_error(_Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "stopped: the client disconnected", "deadline_exceeded"), "model")
    assert isinstance(error, errors.DeadlineExceeded) and error.message == "stopped: the client disconnected"


def test_the_doors_build_the_deadline_from_what_they_know():
    class Context:
        active = True

        def time_remaining(self):
            return 5.0

        def is_active(self):
            return self.active

    context = Context()
    grpc_deadline = Deadline.of_grpc(context)
    assert 4 < grpc_deadline.remaining() <= 5 and grpc_deadline.left() == ""
    context.active = False  # the caller cancelled
    assert grpc_deadline.left() == "the client disconnected"

    connected = {"yes": True}
    wsgi_deadline = Deadline.of_wsgi({CLIENT_DISCONNECTED: lambda: not connected["yes"]}, 600)
    assert wsgi_deadline.left() == ""
    connected["yes"] = False
    assert wsgi_deadline.left() == "the client disconnected"
    assert Deadline.of_wsgi({}, None).left() == ""  # another WSGI server: the deadline alone
