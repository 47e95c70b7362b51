"""The `/models` REST adapter: multipart parsing, status codes and JSON shapes (core over fakes)."""
import base64
import io
import json

import pytest

from mlstudio.common import mongo, settings as settings_mod
from model_service.__main__ import readiness_checks
from model_service.app import create_app
from model_service.settings import ModelSettings

H5_BYTES = b"\x89HDF\r\n\x1a\n" + b"\0" * 100
MODEL_FIELDS = {"id", "title", "location", "label_location", "description", "url", "type", "user", "project", "isPublic",
                "create_time", "status", "labels", "input_shape", "preprocessing", "version", "metrics", "error", "progress", "training",
                "builtin", "threshold"}


@pytest.fixture
def client(world):
    settings = settings_mod.load(ModelSettings, {"MONGO_URI": "mongodb://unused", "AUTH_REQUIRED": "true"})
    return create_app(settings, world.core).test_client()


def as_user(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


def upload(client, *, method="upload", names=("files", "files"), project=10, user=1, **fields):
    model, labels = (io.BytesIO(H5_BYTES), "model.h5"), (io.BytesIO(b"{'light': 0, 'dark': 1}"), "classLabel.txt")
    data = {"title": "light or dark", **fields}
    if names[0] == names[1]:
        data[names[0]] = [model, labels]
    else:
        data.update({names[0]: model, names[1]: labels})
    return client.post(f"/models/all?user_id={user}&project_id={project}&method={method}", data=data,
                       content_type="multipart/form-data", headers=as_user(user))


def test_upload_answers_the_trained_model(client):
    response = upload(client, description="d", isPublic="false", preprocessing="symmetric")
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == MODEL_FIELDS
    assert body["status"] == "Trained" and body["labels"] == ["light", "dark"] and body["preprocessing"] == "symmetric"


def test_upload_accepts_indexed_file_fields(client):
    assert upload(client, names=("files[0]", "files[1]")).status_code == 201


@pytest.mark.parametrize("method, status, code", [("create", 501, "training_not_available"), ("retrain", 400, "bad_method")])
def test_other_methods(client, method, status, code):
    response = upload(client, method=method)
    assert response.status_code == status and response.get_json()["code"] == code


def test_list_get_delete(client):
    created = upload(client).get_json()
    listed = client.get("/models/all?user_id=1&project_id=10", headers=as_user(1))
    assert listed.status_code == 200 and [m["id"] for m in listed.get_json()] == [created["id"]]
    assert set(listed.get_json()[0]) == MODEL_FIELDS
    assert client.get("/models/all?user_id=1", headers=as_user(1)).status_code == 400
    assert client.get(f"/models/{created['id']}", headers=as_user(1)).get_json()["id"] == created["id"]
    assert client.get(f"/models/{created['id']}", headers=as_user(2)).status_code == 404
    deleted = client.delete(f"/models/{created['id']}", headers=as_user(1))
    assert deleted.status_code == 200 and deleted.get_json() == {"message": "success"}
    assert client.get(f"/models/{created['id']}", headers=as_user(1)).status_code == 404


def test_identity_is_checked(client):
    assert client.get("/models/all?user_id=1&project_id=10").status_code == 401
    assert client.get("/models/all?user_id=2&project_id=10", headers=as_user(1)).status_code == 403


def test_bad_label_file_answers_422_json(client):
    data = {"title": "t", "files": [(io.BytesIO(H5_BYTES), "m.h5"), (io.BytesIO(b"__import__('os')"), "labels.txt")]}
    response = client.post("/models/all?user_id=1&project_id=10&method=upload", data=data, content_type="multipart/form-data", headers=as_user(1))
    assert response.status_code == 422 and response.get_json()["code"] == "bad_label_file"


def test_model_file_by_signed_url(client):
    created = upload(client).get_json()
    path_and_query = created["url"].removeprefix("http://gateway.test")
    response = client.get(path_and_query)
    assert response.status_code == 200 and response.data == H5_BYTES
    assert "model-1.h5" in response.headers["Content-Disposition"]
    assert client.get(f"/models/{created['id']}/file?expires=1&signature=x").status_code == 403


def test_openapi_spec_lists_the_routes(client):
    spec = client.get("/docs/models/swagger.json")
    assert spec.status_code == 200
    assert {"/models/all", "/models/{model_id}", "/models/{model_id}/file"} <= set(spec.get_json()["paths"])


def test_readyz_says_whether_tf_serving_answers(world, monkeypatch):
    monkeypatch.setattr(mongo, "ping", lambda db: True)
    settings = settings_mod.load(ModelSettings, {"MONGO_URI": "mongodb://unused"})
    client = create_app(settings, world.core, readiness=readiness_checks(object(), world.core)).test_client()
    assert client.get("/readyz").status_code == 200
    world.tfserving.down = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"mongodb": True, "storage": True, "tfserving": False}
