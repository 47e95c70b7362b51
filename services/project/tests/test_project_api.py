"""The `/projects` REST adapter over the core with an in-memory repository: the answers the
original React UI tests for, and legacy mode (`AUTH_REQUIRED=false`), where `GET/PUT/DELETE
/projects/<id>` come without `user_id` and act for the project's owner."""
import base64
import json

import pytest
from test_project_core import FakeRepository

from project_service.app import create_app
from project_service.core import ProjectCore
from project_service.settings import ProjectSettings


def identity(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


def client_of(core, auth_required):
    return create_app(ProjectSettings(mongo_uri="mongodb://unused", auth_required=auth_required), core).test_client()


@pytest.fixture
def core():
    return ProjectCore(FakeRepository())


def test_update_answers_the_project_and_success(core):
    project = core.create(1, {"title": "t", "type": "Detection"})
    answer = client_of(core, True).put(f"/projects/{project['id']}?description=second", headers=identity(1))
    assert answer.status_code == 200
    assert answer.get_json() == {**project, "description": "second", "message": "success"}


def test_the_threshold_is_set_by_query_or_body_and_a_bad_one_is_400(core):
    client = client_of(core, True)
    created = client.post("/projects/all?user_id=1", json={"title": "t", "type": "Detection"}, headers=identity(1))
    assert created.status_code == 201 and created.get_json()["threshold"] == 0.4
    project_id = created.get_json()["id"]
    assert client.put(f"/projects/{project_id}?threshold=0.55", headers=identity(1)).get_json()["threshold"] == 0.55
    assert client.put(f"/projects/{project_id}", json={"threshold": 0.3}, headers=identity(1)).get_json()["threshold"] == 0.3
    refused = client.put(f"/projects/{project_id}?threshold=1.2", headers=identity(1))
    assert refused.status_code == 400
    assert refused.get_json() == {"message": "threshold must be a number in (0, 1], got '1.2'", "code": "invalid_threshold"}
    assert client.get(f"/projects/{project_id}", headers=identity(1)).get_json()["threshold"] == 0.3


def test_legacy_id_only_routes_act_for_the_owner(core):
    project = core.create(7, {"title": "mine", "type": "Classification"})
    legacy = client_of(core, False)
    got = legacy.get(f"/projects/{project['id']}")
    assert got.status_code == 200 and got.get_json()["title"] == "mine"
    updated = legacy.put(f"/projects/{project['id']}?description=My second project")
    assert updated.status_code == 200 and updated.get_json()["message"] == "success"
    assert updated.get_json()["description"] == "My second project"
    assert legacy.delete(f"/projects/{project['id']}").get_json() == {"message": "success"}
    missing = legacy.get(f"/projects/{project['id']}")
    assert missing.status_code == 404 and missing.get_json()["message"] == f"project {project['id']} not found"


def test_legacy_checks_a_named_user_or_a_token(core):
    project = core.create(7, {"title": "mine", "type": "Classification"})
    legacy = client_of(core, False)
    assert legacy.get(f"/projects/{project['id']}?user_id=8").status_code == 404
    assert legacy.delete(f"/projects/{project['id']}", headers=identity(8)).status_code == 404
    assert legacy.get(f"/projects/{project['id']}?user_id=8", headers=identity(7)).status_code == 403
    assert legacy.get(f"/projects/{project['id']}").status_code == 200  # not deleted
    listing = legacy.get("/projects/all")
    assert listing.status_code == 400 and listing.get_json()["message"] == "query parameter user_id is required"


def test_with_authentication_on_nothing_changes(core):
    project = core.create(7, {"title": "mine", "type": "Classification"})
    client = client_of(core, True)
    assert client.get(f"/projects/{project['id']}").status_code == 401
    assert client.get(f"/projects/{project['id']}", headers=identity(8)).status_code == 404
    assert client.get(f"/projects/{project['id']}", headers=identity(7)).status_code == 200
