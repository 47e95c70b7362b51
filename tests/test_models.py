"""The model service through the gateway, against the real local stack (TF Serving stand-in when
`tensorflow_model_server` is not on PATH): uploading Keras and SavedModel files, the listing
rules, predictions filed by `/images/predict` with exact scores and boxes, refused uploads that
leave nothing behind, deletes that stop serving, TF Serving repopulated from storage, and readiness
that asks TF Serving."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests
from PIL import Image

from deploy.local.managed_stack import REQUEST_TIMEOUT_S
from model_service import sample_models

pytestmark = pytest.mark.integration

MODEL_FIELDS = {"id", "title", "location", "label_location", "description", "url", "type", "user", "project", "isPublic",
                "create_time", "status", "labels", "input_shape", "preprocessing", "version", "metrics", "error", "progress", "training",
                "builtin", "threshold"}
LIGHT, DARK = sample_models.light_dark_scores(255), sample_models.light_dark_scores(0)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    sample_models.write_samples(directory)
    return directory


def png(value: int, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, "PNG")
    return out.getvalue()


class User:
    """A registered user with a session carrying their token, and one project."""

    def __init__(self, stack, api, register, project_type="Classification"):
        self.user_id, token = register(stack, f"models-{uuid.uuid4().hex[:8]}")
        self.session = api(stack, token)
        self.project_id = self.new_project(project_type)

    def new_project(self, project_type: str) -> int:
        created = self.session.post("/projects/all", params={"user_id": self.user_id},
                                    json={"title": "models", "description": "", "type": project_type})
        assert created.status_code in (200, 201), created.text
        return created.json()["id"]

    def params(self, project_id=None, **extra):
        return {"user_id": self.user_id, "project_id": project_id or self.project_id, **extra}

    def upload(self, model: tuple[str, bytes], labels: bytes, *, project_id=None, method="upload", **fields):
        fields.setdefault("title", "uploaded model")
        return self.session.post("/models/all", params=self.params(project_id, method=method), data=fields,
                                 files=[("files", model), ("files", ("labels.txt", labels))])

    def uploaded(self, *args, **kwargs) -> dict:
        response = self.upload(*args, **kwargs)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def models(self, project_id=None) -> list[dict]:
        response = self.session.get("/models/all", params=self.params(project_id))
        assert response.status_code == 200, response.text
        return response.json()

    def images(self, project_id=None) -> list[dict]:
        response = self.session.get("/images/all", params=self.params(project_id))
        assert response.status_code == 200, response.text
        return response.json()

    def predict(self, model_id, images: list[bytes], project_id=None):
        return self.session.post("/images/predict", params=self.params(project_id), data={"model_id": str(model_id)},
                                 files=[("files", (f"image{i}.png", data)) for i, data in enumerate(images)])


@pytest.fixture
def alice(stack, api, register):
    return User(stack, api, register)


@pytest.fixture
def bob(stack, api, register):
    return User(stack, api, register)


def h5(samples) -> tuple[str, bytes]:
    return "model.h5", (samples / "light_dark.h5").read_bytes()


def all_model_objects(stack) -> list[str]:
    prefix = stack.data_dir / "objects" / "models"
    return sorted(p.relative_to(prefix).as_posix() for p in prefix.rglob("*") if p.is_file()) if prefix.exists() else []


def served_files(stack, model_id: int) -> list[str]:
    base = stack.data_dir / "model" / "tfserving-models" / f"model-{model_id}"
    return sorted(p.name for p in base.rglob("*")) if base.exists() else []


def wait_for(condition, what: str, timeout_s: float = REQUEST_TIMEOUT_S):
    """The first true value of `condition`, polled; the bound guards against a hang."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not come within {timeout_s:g} s")


def served_or_none(response):
    """`response` unless it says TF Serving is not ready yet (503)."""
    if response.status_code == 503:
        return None
    assert response.status_code in (200, 201), response.text
    return response


def stored_objects(stack, model_id: int) -> list[str]:
    prefix = stack.data_dir / "objects" / "models" / str(model_id)
    return sorted(p.name for p in prefix.rglob("*") if p.is_file()) if prefix.exists() else []


def test_h5_with_the_original_class_label_file_classifies_light_and_dark(stack, alice, samples):
    model = alice.uploaded(h5(samples), b"{'light': 0, 'dark': 1}\n", title="light or dark", description="mean pixel")
    assert set(model) == MODEL_FIELDS
    assert (model["status"], model["labels"], model["input_shape"], model["preprocessing"], model["type"]) == (
        "Trained", ["light", "dark"], [32, 32, 3], "raw", "Classification")
    # The project lists the user's upload, plus the built-in model of its type.
    listed = alice.models()
    assert [m["id"] for m in listed if not m["builtin"]] == [model["id"]]
    assert [(m["title"], m["user"]) for m in listed if m["builtin"]] == [("ImageNet (EfficientNet-Lite0)", 0)]
    assert "saved_model.pb" in served_files(stack, model["id"])
    assert stored_objects(stack, model["id"]) == ["labels.txt", "model.h5", "saved_model.tar.gz"]

    response = alice.predict(model["id"], [png(255), png(0), png(255, (300, 200))])
    assert response.status_code in (200, 201), response.text
    images = response.json()
    assert [image["type"] for image in images] == ["light", "dark", "light"]
    assert [image["score"] for image in images] == pytest.approx([LIGHT[0], DARK[1], LIGHT[0]], abs=1e-4)
    listed = alice.session.get("/images/light", params=alice.params()).json()
    assert sorted(image["id"] for image in listed) == sorted([images[0]["id"], images[2]["id"]])


def test_keras_file_with_teachable_machine_labels_and_unit_preprocessing(alice, samples):
    keras_file = ("model.keras", (samples / "light_dark.keras").read_bytes())
    model = alice.uploaded(keras_file, b"0 light\n1 dark\n", preprocessing="unit")
    assert model["preprocessing"] == "unit" and model["labels"] == ["light", "dark"]
    # Scaled to 0..1, even white is far below the rule's 127.5: dark, with the rule's exact score.
    image = alice.predict(model["id"], [png(255)]).json()[0]
    assert image["type"] == "dark"
    assert image["score"] == pytest.approx(sample_models.light_dark_scores(1.0)[1], abs=1e-4)


def test_detection_project_predictions_carry_boxes_in_both_forms(stack, api, register, samples):
    owner = User(stack, api, register, project_type="Detection")
    detector = ("detector.zip", (samples / "detector.zip").read_bytes())
    model = owner.uploaded(detector, sample_models.DETECTOR_LABELS.encode(), title="bottles")
    assert (model["status"], model["type"], model["labels"]) == ("Trained", "Detection", ["bottle", "can"])
    response = owner.predict(model["id"], [png(255, (200, 100)), png(0, (200, 100))])
    assert response.status_code in (200, 201), response.text
    white, black = response.json()
    assert [(d["label"], round(d["score"], 3)) for d in white["detections"]] == [("bottle", 1.0)]
    assert white["detections"][0]["box"] == pytest.approx([20, 25, 100, 75], abs=0.01)
    assert white["captions"] == ",bottle 1.000" and white["boxes"] == ",[20 25 100 75]"
    assert black["detections"] == []


def test_listing_and_access_rules(stack, api, register, alice, bob, samples):
    public = alice.uploaded(h5(samples), b"light\ndark\n", title="public", isPublic="true")
    private = alice.uploaded(h5(samples), b"light\ndark\n", title="private")
    assert public["isPublic"] is True and private["isPublic"] is False
    assert {m["id"] for m in alice.models()} >= {public["id"], private["id"]}

    listed = {m["id"] for m in bob.models()}
    assert public["id"] in listed and private["id"] not in listed
    detection_project = bob.new_project("Detection")
    assert public["id"] not in {m["id"] for m in bob.models(detection_project)}

    assert bob.session.get(f"/models/{public['id']}").status_code == 200
    assert bob.session.get(f"/models/{private['id']}").status_code == 404
    assert bob.predict(private["id"], [png(255)]).status_code == 404
    assert bob.predict(public["id"], [png(255)]).json()[0]["type"] == "light"
    assert bob.session.delete(f"/models/{public['id']}").status_code == 403
    assert bob.session.get("/models/all", params={"user_id": bob.user_id, "project_id": alice.project_id}).status_code == 404


@pytest.mark.parametrize("case, status, code", [
    ("truncated h5", 422, "bad_model_file"),
    ("not a model", 415, "unsupported_model_format"),
    ("three labels for two outputs", 422, "labels_mismatch"),
    ("label file with code", 422, "bad_label_file"),
])
def test_refused_uploads_leave_nothing(stack, alice, samples, tmp_path, case, status, code):
    model, labels = h5(samples), b"{'light': 0, 'dark': 1}"
    marker = tmp_path / "executed"
    if case == "truncated h5":
        model = ("model.h5", model[1][: len(model[1]) // 2])
    elif case == "not a model":
        model = ("model.h5", b"def train(data_dir, output_dir, params):\n    pass\n")
    elif case == "three labels for two outputs":
        labels = b"light\ndark\ngrey\n"
    else:
        labels = f"{{'light': __import__('os').system('touch {marker}'), 'dark': 1}}".encode()
    objects_before = all_model_objects(stack)
    response = alice.upload(model, labels)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["message"]
    assert [m for m in alice.models() if m["user"] == alice.user_id] == []
    assert all_model_objects(stack) == objects_before
    assert not marker.exists()


def zipped(directory: Path) -> tuple[str, bytes]:
    return "model.zip", sample_models.zip_tree(directory, directory.with_suffix(".zip"), prefix="model/").read_bytes()


def reading_saved_model(directory: Path, secret: Path) -> Path:
    """A classifier whose serving_default returns the length of the file `secret`'s bytes."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def classify(images):
        leaked = tf.cast(tf.strings.length(tf.io.read_file(str(secret))), tf.float32)
        return {"scores": tf.fill([tf.shape(images)[0], 2], leaked)}

    module = tf.Module()
    module.classify = classify
    tf.saved_model.save(module, str(directory), signatures={"serving_default": classify})
    return directory


def writing_saved_model(directory: Path, target: Path) -> Path:
    """A TF1-style classifier whose main op (run by TensorFlow while loading) writes `target`."""
    import tensorflow as tf

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        images = tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3], name="images")
        scores = tf.tile(tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2])[:, :1], [1, 2])
        builder = tf.compat.v1.saved_model.Builder(str(directory))
        builder.add_meta_graph_and_variables(
            session, ["serve"], main_op=tf.io.write_file(str(target), "written by a model"),
            signature_def_map={"serving_default": tf.compat.v1.saved_model.predict_signature_def({"images": images}, {"scores": scores})})
        builder.save()
    return directory


@pytest.mark.parametrize("op", ["ReadFile", "WriteFile"])
def test_saved_models_that_read_or_write_files_are_refused_naming_the_op(stack, alice, tmp_path, op):
    target = stack.data_dir / f"model-test-{uuid.uuid4().hex[:8]}"
    if op == "ReadFile":
        target.write_text("the stack's secret")
        model = zipped(reading_saved_model(tmp_path / "reader", target))
    else:
        model = zipped(writing_saved_model(tmp_path / "writer", target))
    objects_before = all_model_objects(stack)
    response = alice.upload(model, b"light\ndark\n")
    assert response.status_code == 422, response.text
    assert response.json()["message"] == f"the model uses the operation {op}, which reads or writes files; models may only compute"
    assert [m for m in alice.models() if m["user"] == alice.user_id] == []
    assert all_model_objects(stack) == objects_before
    if op == "WriteFile":
        assert not target.exists()


def test_a_zip_bomb_is_refused_after_unpacking_no_more_than_the_upload_limit(stack_factory, api, register, tmp_path):
    limit = 2_000_000
    stack = stack_factory(AUTH_REQUIRED="true", MAX_MODEL_UPLOAD_BYTES=str(limit))
    owner = User(stack, api, register)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("model/saved_model.pb", b"")
        for index in range(4):  # 4 x 64 MiB of zeros: about 256 KiB zipped
            out.writestr(f"model/variables/part{index}", b"\0" * (64 << 20))
    assert len(bomb.getvalue()) < limit
    staging = stack.data_dir / "model" / "tfserving-models" / ".staging"
    response = owner.upload(("model.zip", bomb.getvalue()), b"light\ndark\n")
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message == f"the model zip cannot be used: it unpacks to more than {limit} bytes"
    assert [m for m in owner.models() if m["user"] == owner.user_id] == []
    assert not staging.exists() or list(staging.iterdir()) == []


# create takes one file (a training script), not a model and its labels: tests/test_training.py.
@pytest.mark.parametrize("method, status", [("create", 400), ("retrain", 400), ("", 400)])
def test_methods_other_than_upload(alice, samples, method, status):
    response = alice.upload(h5(samples), b"light\ndark\n", method=method)
    assert response.status_code == status and response.json()["message"]


def test_deleting_a_model_stops_serving_it_and_removes_its_files(stack, alice, samples):
    model = alice.uploaded(h5(samples), b"light\ndark\n")
    assert alice.predict(model["id"], [png(0)]).status_code in (200, 201)
    deleted = alice.session.delete(f"/models/{model['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"message": "success"}
    assert alice.session.get(f"/models/{model['id']}").status_code == 404
    assert alice.predict(model["id"], [png(0)]).status_code == 404
    assert served_files(stack, model["id"]) == [] and stored_objects(stack, model["id"]) == []
    config = (stack.data_dir / "model" / "tfserving-models" / "models.config").read_text()
    assert f'"model-{model["id"]}"' not in config


def test_deleting_the_project_deletes_its_models(stack, alice, samples):
    model = alice.uploaded(h5(samples), b"light\ndark\n")
    assert alice.session.delete(f"/projects/{alice.project_id}").status_code == 200
    # The delete answers once the project is hidden; its models go in the background.
    wait_for(lambda: alice.session.get(f"/models/{model['id']}").status_code == 404, "the model to go with its project")
    wait_for(lambda: served_files(stack, model["id"]) == [] and stored_objects(stack, model["id"]) == [], "its files to go")


def test_the_model_file_downloads_from_its_url(alice, samples):
    model = alice.uploaded(h5(samples), b"light\ndark\n")
    response = requests.get(model["url"], timeout=REQUEST_TIMEOUT_S)  # no token: the signature is the credential
    assert response.status_code == 200 and response.content == h5(samples)[1]
    assert requests.get(model["url"].replace("signature=", "signature=0"), timeout=REQUEST_TIMEOUT_S).status_code == 403


def test_a_fresh_tf_serving_is_repopulated_from_storage(private_stack, api, register, samples):
    stack = private_stack().start()
    owner = User(stack, api, register)
    model = owner.uploaded(h5(samples), b"light\ndark\n")
    builtins = [m for m in owner.models() if m["builtin"]]
    stack.stop()
    shutil.rmtree(stack.data_dir / "model" / "tfserving-models")
    stack.start()
    assert owner.session.get(f"/models/{model['id']}").json()["status"] == "Trained"
    # On a busy machine the restarted TF Serving may still be loading the restored model when the
    # stack reports healthy (503 until then): wait for the prediction, not for a fixed time.
    predicted = wait_for(lambda: served_or_none(owner.predict(model["id"], [png(0)])), "a prediction from the restored model")
    image = predicted.json()[0]
    # The built-ins too: the same records (registered once), served again from object storage.
    assert [m for m in owner.models() if m["builtin"]] == builtins and builtins[0]["status"] == "Trained"
    assert wait_for(lambda: served_or_none(owner.predict(builtins[0]["id"], [png(0)])), "a prediction from a built-in").status_code == 201
    assert image["type"] == "dark" and image["score"] == pytest.approx(DARK[1], abs=1e-4)
    assert "saved_model.pb" in served_files(stack, model["id"])


def test_the_model_service_is_ready_once_tf_serving_answers(stack):
    def ready():
        answer = requests.get(f"http://127.0.0.1:{stack.ports['MODEL_HTTP_PORT']}/readyz", timeout=REQUEST_TIMEOUT_S)
        return answer if answer.status_code == 200 else None

    response = wait_for(ready, "the model service's readiness")
    assert response.json()["checks"] == {"mongodb": True, "storage": True, "tfserving": True}


# --- TF Serving that hangs, and clients that leave ----------------------------------------------
# A stack without the launcher's TF Serving: the test runs its own (the same command) so that it
# can stop, kill or replace it. The inference deadline is huge: an answer that comes at all came
# from the short connect wait, by construction.
OWN_TF_SERVING = {"MLSTUDIO_ONLY": "user,project,image,model", "TFSERVING_PREDICT_DEADLINE_S": "1000000",
                  "TFSERVING_CONNECT_WAIT_S": "2", "STARTUP_TFSERVING_WAIT_S": "1"}


class OwnTFServing:
    """TF Serving for a stack, started with the launcher's command and environment."""

    def __init__(self, stack, log_path):
        self.stack, self.log_path, self.process = stack, log_path, None
        self.socket_path = stack.data_dir / "tfserving" / "grpc.sock"  # deploy.local.registry.tfserving_socket

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            self.process = self.stack.start_component("tfserving", self.log_path)
        return self.model_service_sees_it()

    def model_service_sees_it(self) -> bool:
        answer = requests.get(f"http://127.0.0.1:{self.stack.ports['MODEL_HTTP_PORT']}/readyz", timeout=REQUEST_TIMEOUT_S)
        return answer.json()["checks"]["tfserving"]

    def signal(self, signum) -> None:
        os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def own_tf_serving(stack_factory, tmp_path_factory):
    stack = stack_factory(**OWN_TF_SERVING)
    serving = OwnTFServing(stack, tmp_path_factory.mktemp("own-tfserving") / "tfserving.log")
    yield serving
    serving.kill()


@pytest.fixture
def serving_owner(own_tf_serving, api, register, samples):
    """A user with a served model, on the stack whose TF Serving the test controls (running)."""
    wait_for(own_tf_serving.ready, "TF Serving answering the model service")
    owner = User(own_tf_serving.stack, api, register)
    owner.model = owner.uploaded(h5(samples), b"light\ndark\n")
    assert owner.predict(owner.model["id"], [png(0)]).status_code == 201
    return owner


@contextlib.contextmanager
def silent_server(path):
    """A unix socket that accepts connections into its backlog and never answers: a TF Serving
    that hangs before the HTTP/2 handshake (stopped, wedged, or an address nobody serves)."""
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        sock.listen(64)
        yield
    path.unlink(missing_ok=True)


def test_tf_serving_that_does_not_answer_is_503_after_the_connect_wait_asked_once(own_tf_serving, serving_owner):
    stored = len(serving_owner.images())
    log_before = own_tf_serving.stack.log_path.read_text(errors="replace")
    own_tf_serving.kill()
    with silent_server(own_tf_serving.socket_path):
        wait_for(lambda: not own_tf_serving.model_service_sees_it(), "the model service noticing TF Serving is gone")
        # bytes the project does not hold yet: a repeat would be answered from the stored image, unasked
        response = serving_owner.predict(serving_owner.model["id"], [png(1)])
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "tfserving_unreachable" and body["message"].startswith("TensorFlow Serving is not reachable")
    assert str(own_tf_serving.stack.data_dir) not in body["message"]
    assert len(serving_owner.images()) == stored
    # one Classify reached the model service: the image service did not ask again
    log = own_tf_serving.stack.log_path.read_text(errors="replace")[len(log_before):]
    assert log.count("Classify failed: TensorFlow Serving is not reachable") == 1, log[-4000:]


def envoy_counter(stack, name: str) -> int:
    stats = requests.get(f"http://127.0.0.1:{stack.ports['ENVOY_ADMIN_PORT']}/stats", params={"filter": f"^{name}$"},
                         timeout=REQUEST_TIMEOUT_S).text
    return int(stats.split(":")[1]) if stats.strip() else 0


def raw_request(session, url: str, **kwargs) -> bytes:
    """The bytes of an HTTP/1.1 POST as `session` would send it (the test sends them itself, to
    hang up at a moment of its choosing)."""
    prepared = session.prepare_request(requests.Request("POST", url, **kwargs))
    body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
    host = url.split("/")[2]
    head = [f"POST {prepared.path_url} HTTP/1.1", f"Host: {host}", "Connection: close"]
    head += [f"{key}: {value}" for key, value in prepared.headers.items() if key.lower() not in ("host", "connection")]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


def test_a_prediction_whose_client_left_during_a_slow_classify_stores_nothing(own_tf_serving, serving_owner):
    stack = own_tf_serving.stack
    stored = len(serving_owner.images())
    request = raw_request(serving_owner.session, stack.url + "/images/predict", params=serving_owner.params(),
                          data={"model_id": str(serving_owner.model["id"])}, files=[("files", ("late.png", png(2)))])
    reset = "cluster.image.upstream_cx_destroy_with_active_rq"
    resets_before = envoy_counter(stack, reset)
    log_start = stack.log_path.stat().st_size
    new_log = lambda: stack.log_path.read_bytes()[log_start:].decode(errors="replace")  # noqa: E731
    own_tf_serving.signal(signal.SIGSTOP)  # TF Serving hangs: the Classify waits on its open connection
    try:
        with socket.create_connection(("127.0.0.1", stack.ports["GATEWAY_PORT"])) as client:
            client.sendall(request)
            wait_for(lambda: "predicting 1 images with model" in new_log(), "the image service predicting")
        # The client hung up while the model service waits for TF Serving; the gateway resets
        # the request it forwarded, which closes the image service's connection.
        wait_for(lambda: envoy_counter(stack, reset) > resets_before, "the gateway dropping the forwarded request")
    finally:
        own_tf_serving.signal(signal.SIGCONT)
    refused = "not storing 1 images: the client disconnected"
    wait_for(lambda: refused in new_log() or len(serving_owner.images()) > stored, "the image service finishing the prediction")
    assert len(serving_owner.images()) == stored
    assert refused in new_log()
