"""TF Serving contract: the model service's TF Serving code (repository layout, config file,
HandleReloadConfigRequest, GetModelStatus, GetModelMetadata, Predict) against a real server.

By default the test starts TF Serving as the local stack does (`python -m tfserving_standin.launch`:
the stand-in, confined by bwrap, serving on a unix socket), so the contract holds for the server
the stack runs, sandbox included. To hold the real server to the same contract, start `tensorflow_model_server --port=8500
--model_config_file=<dir>/models.config` over a directory both can reach and run

    TFSERVING_ADDR=127.0.0.1:8500 TFSERVING_MODEL_BASE=<dir> \
        [TFSERVING_MODEL_BASE_IN_SERVER=/models] pytest tests/test_tfserving_contract.py

(the last variable when the server sees <dir> under another path, as in a container).
TFSERVING_ADDR may name a unix socket too (`unix:/path/grpc.sock`).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from model_service.tfserving_client import TFServingClient
    from model_service.tfserving_repository import TFServingRepository

    process = None
    if os.environ.get("TFSERVING_ADDR"):
        address = os.environ["TFSERVING_ADDR"]
        base = Path(os.environ["TFSERVING_MODEL_BASE"])
        repository = TFServingRepository(base, base / "models.config", os.environ.get("TFSERVING_MODEL_BASE_IN_SERVER") or None)
        repository.prepare()
    else:
        base = tmp_path_factory.mktemp("tfserving")
        repository = TFServingRepository(base, base / "models.config")
        repository.prepare()
        socket_path = tmp_path_factory.mktemp("tfserving-run") / "grpc.sock"
        address = f"unix:{socket_path}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "services" / "model"), str(REPO_ROOT / "services" / "common")]),
               "TFSERVING_SOCKET": str(socket_path), "TFSERVING_MODEL_BASE": str(base),
               "TFSERVING_CONFIG_FILE": str(repository.config_file), "TFSERVING_PORT": str(_free_port())}
        log_file = open(base.parent / "tfserving.log", "wb")  # noqa: SIM115 - closed with the server
        process = subprocess.Popen([sys.executable, "-m", "tfserving_standin.launch"], env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    client = TFServingClient(address, predict_deadline_s=30, control_deadline_s=60)
    deadline = time.monotonic() + 300  # a bound against a hang on a busy machine
    while not client.ping():
        assert process is None or process.poll() is None, "the stand-in exited"
        assert time.monotonic() < deadline, f"TF Serving at {address} did not answer"
        time.sleep(0.3)
    yield types.SimpleNamespace(client=client, repository=repository, address=address)
    if process is not None:
        process.terminate()
        process.wait(60)
        log_file.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """SavedModels as the model service exports them: light/dark (raw and unit) and the detector."""
    from model_service import exporter, sample_models, uploads

    samples = tmp_path_factory.mktemp("samples")
    sample_models.write_samples(samples)
    made = {}
    for key, name, fmt, model_type, mode in [
        ("light_dark", "light_dark.h5", uploads.H5, "Classification", "raw"),
        ("light_dark_unit", "light_dark.keras", uploads.KERAS, "Classification", "unit"),
        ("detector", "detector.zip", uploads.SAVED_MODEL_ZIP, "Detection", "raw"),
    ]:
        work = tmp_path_factory.mktemp(key)
        exporter.export(samples / name, fmt, model_type, mode, 64, work / "saved_model", work, 1 << 30)
        made[key] = work / "saved_model"
    return made


def install(server, exported, key, name, version):
    staged = server.repository.staging_dir() / "saved_model"
    shutil.copytree(exported[key], staged)
    server.repository.install(name, version, staged)


def serve(server, *served):
    from model_service.tfserving_repository import ServedVersion

    server.client.reload_config(server.repository.write_config([ServedVersion(name, version) for name, version in served]))
    for name, version in served:
        server.client.wait_available(name, version, 300)


def grey(*values, size=32):
    return np.stack([np.full((size, size, 3), value, np.uint8) for value in values])


def test_reloaded_model_becomes_available_and_predicts(server, exported):
    from model_service.sample_models import light_dark_scores

    install(server, exported, "light_dark", "contract-a", 1)
    serve(server, ("contract-a", 1))
    assert server.client.version_state("contract-a", 1) == ("AVAILABLE", "")
    outputs = server.client.predict("contract-a", 1, {"images": grey(255, 0, 200)}, ["probabilities"])
    expected = [light_dark_scores(value) for value in (255, 0, 200)]
    assert outputs["probabilities"].shape == (3, 2)
    assert outputs["probabilities"] == pytest.approx(np.array(expected), abs=1e-5)


def test_metadata_describes_the_serving_signature(server, exported):
    from tensorflow.core.framework import types_pb2

    install(server, exported, "light_dark", "contract-a", 1)
    serve(server, ("contract-a", 1))
    signature = server.client.signatures("contract-a", 1)["serving_default"]
    assert signature.inputs["images"].dtype == types_pb2.DT_UINT8
    assert [d.size for d in signature.inputs["images"].tensor_shape.dim] == [-1, -1, -1, 3]
    assert signature.outputs["probabilities"].dtype == types_pb2.DT_FLOAT


def test_detector_answers_od_api_outputs_for_a_batch(server, exported):
    install(server, exported, "detector", "contract-d", 1)
    serve(server, ("contract-d", 1))
    keys = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]
    outputs = server.client.predict("contract-d", 1, {"images": grey(255, 0, size=64)}, keys)
    assert set(outputs) == set(keys)
    assert outputs["detection_boxes"].shape == (2, 2, 4)
    assert outputs["detection_boxes"][0, 0] == pytest.approx([0.25, 0.1, 0.75, 0.5])
    assert outputs["detection_scores"][:, 0] == pytest.approx([1.0, 0.0], abs=1e-5)


def test_unknown_models_and_versions(server, exported):
    from mlstudio.common import errors

    install(server, exported, "light_dark", "contract-a", 1)
    serve(server, ("contract-a", 1))
    assert server.client.version_state("contract-nothing", 1)[0] == "UNKNOWN"
    for name, version in [("contract-nothing", 1), ("contract-a", 9)]:
        with pytest.raises(errors.Unavailable) as caught:
            server.client.predict(name, version, {"images": grey(0)}, ["probabilities"])
        assert caught.value.code == "model_not_loaded"


def test_a_new_version_replaces_the_old_one(server, exported):
    from model_service.sample_models import light_dark_scores

    install(server, exported, "light_dark", "contract-v", 1)
    serve(server, ("contract-v", 1))
    install(server, exported, "light_dark_unit", "contract-v", 2)
    serve(server, ("contract-v", 2))
    outputs = server.client.predict("contract-v", 2, {"images": grey(255)}, ["probabilities"])
    assert outputs["probabilities"][0] == pytest.approx(light_dark_scores(1.0), abs=1e-5)
    wait_until(lambda: server.client.version_state("contract-v", 1)[0] in ("END", "UNKNOWN"))


def test_removing_a_model_from_the_config_stops_serving_it(server, exported):
    from mlstudio.common import errors

    install(server, exported, "light_dark", "contract-r", 1)
    serve(server, ("contract-r", 1))
    serve(server)

    def gone():
        try:
            server.client.predict("contract-r", 1, {"images": grey(0)}, ["probabilities"])
        except errors.Unavailable:
            return True
        return False

    wait_until(gone)


def test_a_broken_saved_model_never_becomes_available(server):
    from mlstudio.common import errors
    from model_service.tfserving_client import ModelLoadFailed
    from model_service.tfserving_repository import ServedVersion

    staged = server.repository.staging_dir() / "broken"
    (staged / "variables").mkdir(parents=True)
    # A graph that passes the repository's check but no loader can serve (no `serve` tag).
    from tensorflow.core.protobuf import saved_model_pb2

    broken = saved_model_pb2.SavedModel()
    broken.meta_graphs.add().graph_def.node.add(name="x", op="Placeholder")
    (staged / "saved_model.pb").write_bytes(broken.SerializeToString())
    server.repository.install("contract-broken", 1, staged)
    with pytest.raises((ModelLoadFailed, errors.Unavailable)):
        # The real server answers the reload with an error once loading fails; either way the
        # version never becomes AVAILABLE.
        server.client.reload_config(server.repository.write_config([ServedVersion("contract-broken", 1)]))
        server.client.wait_available("contract-broken", 1, 300)
    assert server.client.version_state("contract-broken", 1)[0] != "AVAILABLE"
    serve(server)


def test_an_unreachable_server_is_unavailable_at_once():
    from tensorflow_serving.config import model_server_config_pb2

    from mlstudio.common import errors
    from model_service.tfserving_client import TFServingClient

    client = TFServingClient(f"127.0.0.1:{_free_port()}", predict_deadline_s=5, control_deadline_s=5)
    with pytest.raises(errors.Unavailable):
        client.predict("any", 1, {"images": grey(0)}, ["probabilities"])
    with pytest.raises(errors.Unavailable):
        client.reload_config(model_server_config_pb2.ModelServerConfig())
    assert client.ping(timeout_s=1) is False


def wait_until(condition, timeout_s: float = 300.0) -> None:
    """Polls `condition`; the bound guards against a hang on a busy machine."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there in time"
        time.sleep(0.2)


def file_reader(directory: Path, path: Path) -> Path:
    """A SavedModel whose serving signature answers the length of the file at `path`: a graph
    that reads a file, as an uploaded model might (the model service refuses such graphs; the
    sandbox is the wall behind that check, tested here directly)."""
    import tensorflow as tf

    class Reader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="images")])
        def serve(self, images):
            return {"length": tf.reshape(tf.strings.length(tf.io.read_file(str(path))), [1]), "count": tf.shape(images)}

    reader = Reader()
    tf.saved_model.save(reader, str(directory), signatures={"serving_default": reader.serve})
    return directory


def test_a_graph_cannot_read_files_outside_the_model_repository(server, tmp_path):
    from mlstudio.common import errors

    secret = tmp_path / "secrets" / "media-signing-key"
    secret.parent.mkdir()
    secret.write_text("not for model graphs")
    inside = server.repository.base / "contract-files" / "readable.txt"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_text("part of the repository")
    for name, path in [("contract-read-inside", inside), ("contract-read-secret", secret)]:
        staged = file_reader(server.repository.staging_dir() / "reader", path)
        with pytest.raises(errors.Unprocessable):  # the model service's own way in refuses it
            server.repository.install(name, 1, staged)
        # placed past that check, as a file dropped into the repository would be
        target = server.repository.version_dir(name, 1)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    serve(server, ("contract-read-inside", 1), ("contract-read-secret", 1))
    outputs = server.client.predict("contract-read-inside", 1, {"images": np.zeros(1, np.float32)}, ["length"])
    assert list(outputs["length"]) == [len("part of the repository")]  # the op itself works
    with pytest.raises(errors.DomainError) as caught:
        server.client.predict("contract-read-secret", 1, {"images": np.zeros(1, np.float32)}, ["length"])
    assert "not for model graphs" not in caught.value.message
    serve(server)
