"""TF Serving that does not answer: the client gives up after its short connect wait with 503
"TensorFlow Serving is not reachable", whatever the (long) inference deadline says.

The server here is a socket that listens and never accepts: the kernel completes TCP connections
into its backlog, so gRPC's connection hangs before the HTTP/2 handshake, as with a stopped or
wedged TF Serving, or a pod whose address no longer answers."""
import socket

import numpy as np
import pytest

from mlstudio.common import errors
from model_service.tfserving_client import UNREACHABLE, TFServingClient

HOUR = 3600.0


@pytest.fixture
def silent_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_predict_on_a_channel_that_never_gets_ready_answers_unreachable(silent_server):
    client = TFServingClient(silent_server, predict_deadline_s=1000 * HOUR, control_deadline_s=1000 * HOUR,
                             reload_deadline_s=1000 * HOUR, connect_wait_s=0.5)
    with pytest.raises(errors.Unavailable) as caught:
        client.predict("model-1", 1, {"images": np.zeros((1, 2, 2, 3), np.float32)}, ["probabilities"])
    assert caught.value.code == "tfserving_unreachable" and caught.value.message.startswith(UNREACHABLE)
    with pytest.raises(errors.Unavailable) as caught:
        client.version_state("model-1", 1)
    assert caught.value.code == "tfserving_unreachable"
