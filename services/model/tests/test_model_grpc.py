"""The gRPC adapter, through the typed ModelClient the image and video services use (core over fakes)."""
import io

import pytest
from PIL import Image

from mlstudio.common import clients, errors, settings as settings_mod
from model_service.app import build_grpc
from model_service.settings import ModelSettings
from model_service.uploads import Upload


def png(value, size=(200, 100)):
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def model_client(world):
    settings = settings_mod.load(ModelSettings, {"MONGO_URI": "mongodb://unused", "GRPC_PORT": "0"})
    server, port, _health = build_grpc(settings, world.core)
    server.start()
    yield clients.ModelClient(f"127.0.0.1:{port}", deadline_s=10)
    server.stop(0)


def upload(world, project, labels):
    files = [Upload("m.h5", io.BytesIO(b"\x89HDF\r\n\x1a\n" + b"\0" * 10)), Upload("l.txt", io.BytesIO(labels))]
    return world.core.create(1, project, "upload", {"title": "t"}, files)


def test_classify_detect_and_lookups(world, model_client):
    classifier = upload(world, 10, b"light\ndark\n")
    detector = upload(world, 11, b"bottle\ncan\n")
    model = model_client.get_model(classifier["id"], 1)
    assert (model.type, list(model.labels), list(model.input_shape), model.status) == ("Classification", ["light", "dark"], [32, 32, 3], "Trained")
    results = model_client.classify(classifier["id"], 1, [png(255), png(0)])
    assert [(r.label, round(r.score, 3)) for r in results] == [("light", 1.0), ("dark", 1.0)]
    found = model_client.detect(detector["id"], 1, [png(255), png(0)])
    assert [(b.label, round(b.x1), round(b.y1), round(b.x2), round(b.y2)) for b in found[0].boxes] == [("bottle", 20, 25, 100, 75)]
    assert list(found[1].boxes) == []
    with pytest.raises(errors.NotFound):
        model_client.get_model(classifier["id"], 2)
    with pytest.raises(errors.InvalidArgument, match="cannot be decoded"):
        model_client.classify(classifier["id"], 1, [b"garbage"])
    assert model_client.delete_project_data(10) == 1
    with pytest.raises(errors.NotFound):
        model_client.classify(classifier["id"], 1, [png(0)])


def test_tf_serving_down_is_unavailable(world, model_client):
    classifier = upload(world, 10, b"light\ndark\n")
    world.tfserving.down = True
    with pytest.raises(errors.Unavailable):
        model_client.classify(classifier["id"], 1, [png(0)])
