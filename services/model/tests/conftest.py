"""In-memory fakes of the model service's collaborators, and a core built from them.

The core gets a real object store (a temporary directory), the real TF Serving repository layout
and `Serving` logic, and fakes for MongoDB, the project service, the converter and TF Serving's
gRPC API, so its rules are tested without processes or TensorFlow.
"""
from __future__ import annotations

import copy
import types
from pathlib import Path

import numpy as np
import pytest

from mlstudio.common import errors
from mlstudio.common.media_urls import MediaSigner
from mlstudio.common.storage import LocalObjectStore
from model_service.conversion import Conversion
from model_service.core import Limits, ModelCore, served_versions
from model_service.serving import Serving
from model_service.tfserving_client import ModelLoadFailed
from model_service.tfserving_repository import TFServingRepository

SIGNING_KEY = "test-signing-key"
BASE_URL = "http://gateway.test"


class FakeModelRepository:
    """The MongoDB repository's behaviour over a dict."""

    def __init__(self):
        self.docs: dict[int, dict] = {}
        self.next = 0

    def allocate_id(self):
        self.next += 1
        return self.next

    def insert(self, doc):
        self.docs[doc["_id"]] = copy.deepcopy(doc)
        return doc

    def insert_builtin(self, doc):
        if any(d.get("builtin") == doc["builtin"] for d in self.docs.values()):  # the unique index
            return False
        self.insert(doc)
        return True

    def builtin(self, key):
        return next((copy.deepcopy(d) for d in self.docs.values() if d.get("builtin") == key), None)

    def replace_builtin(self, key, digest, changes):
        doc = next((d for d in self.docs.values() if d.get("builtin") == key and d.get("builtin_digest") == digest), None)
        if doc is None:
            return None
        before = copy.deepcopy(doc)
        doc.update(copy.deepcopy(changes))
        return before

    def get(self, model_id):
        doc = self.docs.get(model_id)
        return None if doc is None or doc.get("deleting") else copy.deepcopy(doc)

    def visible(self, project_id, user_id, model_type):
        return [copy.deepcopy(d) for _, d in sorted(self.docs.items()) if not d.get("deleting") and d["type"] == model_type and (
            (d["project"] == project_id and d["user"] == user_id) or (d.get("isPublic") and d["status"] == "Trained"))]

    def update(self, model_id, changes, unset=()):
        doc = self.docs.get(model_id)
        if doc is None:
            return None
        doc.update(copy.deepcopy(changes))
        for name in unset:
            doc.pop(name, None)
        return copy.deepcopy(doc)

    def mark_deleting(self, model_id):
        if model_id in self.docs:
            self.docs[model_id].update(deleting=True, served=False)

    def remove(self, model_id):
        self.docs.pop(model_id, None)

    def of_project(self, project_id):
        return [copy.deepcopy(d) for d in self.docs.values() if d["project"] == project_id]

    def pending_deletions(self):
        return [copy.deepcopy(d) for d in self.docs.values() if d.get("deleting")]

    def served(self):
        return [copy.deepcopy(d) for d in self.docs.values() if d.get("served") and not d.get("deleting")]

    def pending_trainings(self, created_before):
        return [copy.deepcopy(d) for d in self.docs.values() if d["status"] == "Pending" and d.get("source") == "training"
                and d["create_time"] < created_before and not d.get("deleting")]

    def abandoned_registrations(self, now):
        return [copy.deepcopy(d) for d in self.docs.values() if d.get("claimed_until") and d["claimed_until"] < now and not d.get("deleting")]


class FakeProjects:
    """Projects by id: (owner, type)."""

    def __init__(self):
        self.projects: dict[int, tuple[int, str]] = {}

    def get_project(self, project_id, user_id):
        owner, type_ = self.projects.get(project_id, (None, None))
        if owner != user_id:
            raise errors.NotFound(f"project {project_id} not found")
        return types.SimpleNamespace(id=project_id, type=type_, user_id=owner)


def computing_saved_model(marker: str = "", op: str = "Identity") -> bytes:
    """A tiny SavedModel proto: Placeholder -> `op` (Identity: it only computes, so it passes the
    repository's graph check); `marker` makes copies tell apart."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    meta_graph = saved_model.meta_graphs.add()
    meta_graph.meta_info_def.meta_graph_version = marker
    meta_graph.graph_def.node.add(name="images", op="Placeholder")
    meta_graph.graph_def.node.add(name="out", op=op, input=["images"])
    return saved_model.SerializeToString()


@pytest.fixture(name="computing_saved_model")
def computing_saved_model_fixture():
    return computing_saved_model


class FakeConverter:
    """Writes a placeholder SavedModel and reports the configured shape, or the configured error."""

    def __init__(self):
        self.input_shape = [32, 32, 3]
        self.output_size = 2
        self.error: errors.DomainError | None = None
        self.graph = computing_saved_model  # marker -> the saved_model.pb it writes
        self.calls: list[tuple] = []

    def convert(self, source, fmt, model_type, preprocessing, work_dir):
        self.calls.append((Path(source).name, fmt, model_type, preprocessing))
        if self.error:
            raise self.error
        output = Path(work_dir) / "saved_model"
        (output / "variables").mkdir(parents=True)
        (output / "saved_model.pb").write_bytes(self.graph(f"fake saved model {fmt}"))
        return Conversion(output, list(self.input_shape), None if model_type == "Detection" else self.output_size)


class FakeTFServing:
    """TF Serving's gRPC API as the client sees it: configs applied, version states, predictions.

    Classification models answer light/dark scores from each image's mean pixel; detection models
    answer one box per image scored by brightness."""

    def __init__(self):
        self.configs = []
        self.down = False
        self.load_error = ""
        self.broken: set[str] = set()  # models that fail to load, as TF Serving reports them
        self.predict_calls: list[tuple[str, int, int]] = []
        self.predict_shapes: list[tuple[int, ...]] = []

    @property
    def served(self) -> set[str]:
        if not self.configs:
            return set()
        return {entry.name for entry in self.configs[-1].model_config_list.config}

    def reload_config(self, config):
        if self.down:
            raise errors.Unavailable("TensorFlow Serving is unavailable")
        self.configs.append(config)
        failed = sorted(self.served & self.broken)
        if failed:
            raise ModelLoadFailed(f"TensorFlow Serving could not apply the model config: Some models did not become available: {failed}")

    def ping(self):
        return not self.down

    def version_state(self, name, version):
        if name not in self.served:
            return "UNKNOWN", ""
        return ("END", "bad graph") if name in self.broken else ("AVAILABLE", "")

    def wait_available(self, name, version, timeout_s):
        if self.down:
            raise errors.Unavailable("TensorFlow Serving is unavailable")
        if self.load_error or name in self.broken:
            raise ModelLoadFailed(f"TensorFlow Serving could not load the model: {self.load_error or 'bad graph'}")

    def predict(self, name, version, inputs, output_keys, deadline=None):
        if self.down:
            raise errors.Unavailable("TensorFlow Serving is unavailable")
        if name not in self.served:
            raise errors.Unavailable("not loaded", code="model_not_loaded")
        images = inputs["images"]
        self.predict_calls.append((name, version, len(images)))
        self.predict_shapes.append(images.shape)
        means = images.reshape(len(images), -1).mean(axis=1) / 255.0
        if "probabilities" in output_keys:
            return {"probabilities": np.stack([means, 1 - means], axis=1).astype(np.float32)}
        count = len(images)
        return {
            "detection_boxes": np.tile(np.array([[[0.25, 0.1, 0.75, 0.5], [0, 0, 1, 1]]], np.float32), (count, 1, 1)),
            "detection_scores": np.stack([means, np.full(count, 0.1)], axis=1).astype(np.float32),
            "detection_classes": np.tile(np.array([[1.0, 2.0]], np.float32), (count, 1)),
            "num_detections": np.full(count, 2.0, np.float32),
        }


@pytest.fixture
def world(tmp_path):
    """A core over fakes, with its collaborators exposed for assertions."""
    repository = FakeModelRepository()
    projects = FakeProjects()
    projects.projects.update({10: (1, "Classification"), 11: (1, "Detection"), 20: (2, "Classification")})
    store = LocalObjectStore(tmp_path / "objects")
    tfserving_repository = TFServingRepository(tmp_path / "tfserving", tmp_path / "tfserving" / "models.config")
    tfserving_repository.prepare()
    tfserving = FakeTFServing()
    serving = Serving(tfserving_repository, tfserving, lambda: served_versions(repository), load_timeout_s=1)
    converter = FakeConverter()
    signer = MediaSigner(SIGNING_KEY, BASE_URL, 3600)
    core = ModelCore(repository, projects, store, serving, converter, signer, Limits(max_model_bytes=1 << 20, max_batch=4))
    return types.SimpleNamespace(core=core, repository=repository, projects=projects, store=store, tfserving=tfserving,
                                 tfserving_repository=tfserving_repository, serving=serving, converter=converter, signer=signer)
