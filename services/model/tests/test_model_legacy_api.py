"""`/models/<id>` in legacy mode (`AUTH_REQUIRED=false`), as the original React UI calls it:
without `user_id` it acts for the model's owner; a `user_id` or a token, when sent, is checked
as always."""
import base64
import io
import json

from mlstudio.common import settings as settings_mod
from model_service.app import create_app
from model_service.settings import ModelSettings

H5_BYTES = b"\x89HDF\r\n\x1a\n" + b"\0" * 100


def identity(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


def client_of(world, auth_required):
    settings = settings_mod.load(ModelSettings, {"MONGO_URI": "mongodb://unused", "AUTH_REQUIRED": str(auth_required).lower()})
    return create_app(settings, world.core).test_client()


def upload(client, user=1, project=10):
    data = {"title": "light or dark", "files": [(io.BytesIO(H5_BYTES), "model.h5"), (io.BytesIO(b"light\ndark\n"), "labels.txt")]}
    response = client.post(f"/models/all?user_id={user}&project_id={project}&method=upload", data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_id_only_routes_act_for_the_models_owner(world):
    legacy = client_of(world, False)
    model = upload(legacy)
    got = legacy.get(f"/models/{model['id']}")
    assert got.status_code == 200 and got.get_json()["title"] == "light or dark"
    assert legacy.delete(f"/models/{model['id']}").get_json() == {"message": "success"}
    missing = legacy.get(f"/models/{model['id']}")
    assert missing.status_code == 404 and missing.get_json()["message"] == f"model {model['id']} not found"


def test_a_named_user_or_a_token_is_still_checked(world):
    legacy = client_of(world, False)
    model = upload(legacy)
    assert legacy.get(f"/models/{model['id']}?user_id=2").status_code == 404
    assert legacy.delete(f"/models/{model['id']}", headers=identity(2)).status_code == 404
    assert legacy.get(f"/models/{model['id']}").status_code == 200  # not deleted
    authenticated = client_of(world, True)
    assert authenticated.get(f"/models/{model['id']}").status_code == 401
    assert authenticated.get(f"/models/{model['id']}", headers=identity(2)).status_code == 404
