"""Users and projects end to end through the gateway, as API.md specifies them."""
import pytest

pytestmark = pytest.mark.integration


def test_register_conflict_and_login(stack, api):
    session = api(stack)
    created = session.post("/users/", json={"username": "carol", "password": "pw-carol", "email": "carol@example.com"})
    assert created.status_code == 201
    assert set(created.json()) == {"id", "username", "email"} and created.json()["username"] == "carol"
    assert session.post("/users/", json={"username": "carol", "password": "x", "email": "c@example.com"}).status_code == 409
    login = session.post("/users/auth/", json={"username": "carol", "password": "pw-carol", "remember": True})
    assert login.status_code == 200
    assert login.json()["user_id"] == created.json()["id"] and login.json()["username"] == "carol"
    wrong = session.post("/users/auth/", json={"username": "carol", "password": "nope"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "bad_credentials"
    bad_json = session.post("/users/auth/", data="{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["message"]


def test_project_lifecycle(stack, api, register):
    user_id, token = register(stack, "dave")
    session = api(stack, token)
    created = session.post("/projects/all", params={"user_id": user_id}, json={"title": "Bottles", "description": "first", "type": "Classification"})
    assert created.status_code == 201, created.text
    project = created.json()
    assert set(project) == {"id", "title", "location", "description", "type", "user", "create_time", "threshold",
                            "review_threshold"}
    assert project["user"] == user_id and project["type"] == "Classification" and project["create_time"].endswith("Z")
    assert project["threshold"] == 0.4  # the detection threshold of a project that sets none

    as_form = session.post("/projects/all", params={"user_id": user_id}, data={"title": "Cars", "type": "Detection"})
    assert as_form.status_code == 201 and as_form.json()["type"] == "Detection"

    listed = session.get("/projects/all", params={"user_id": user_id})
    assert [p["id"] for p in listed.json()] == [project["id"], as_form.json()["id"]]
    assert session.get(f"/projects/{project['id']}").json() == project

    updated = session.put(f"/projects/{project['id']}", params={"description": "My second project"})
    assert updated.status_code == 200 and updated.json()["description"] == "My second project"
    refused = session.put(f"/projects/{project['id']}", params={"threshold": "1.5"})
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_threshold"
    assert session.put(f"/projects/{project['id']}", json={"threshold": 0.25}).json()["threshold"] == 0.25

    deleted = session.delete(f"/projects/{project['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"message": "success"}
    assert session.get(f"/projects/{project['id']}").status_code == 404
    assert [p["id"] for p in session.get("/projects/all", params={"user_id": user_id}).json()] == [as_form.json()["id"]]


def test_other_users_project_is_404_and_foreign_user_id_is_403(stack, api, register):
    owner_id, owner_token = register(stack, "erin")
    other_id, other_token = register(stack, "frank")
    project = api(stack, owner_token).post("/projects/all", params={"user_id": owner_id}, json={"title": "Mine", "type": "Detection"}).json()
    intruder = api(stack, other_token)
    for response in (intruder.get(f"/projects/{project['id']}"), intruder.put(f"/projects/{project['id']}", params={"description": "x"}),
                     intruder.delete(f"/projects/{project['id']}")):
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert intruder.get("/projects/all", params={"user_id": owner_id}).status_code == 403
    assert all(p["user"] == other_id for p in intruder.get("/projects/all", params={"user_id": other_id}).json())
    assert api(stack, owner_token).get(f"/projects/{project['id']}").status_code == 200


@pytest.mark.parametrize("body,kwargs", [
    ({"description": "no title", "type": "Detection"}, {}),
    ({"title": "t", "type": "Segmentation"}, {}),
    (None, {"data": "{broken", "headers": {"content-type": "application/json"}}),
])
def test_bad_project_input_is_400(stack, api, register, body, kwargs):
    user_id, token = register(stack, "gina")
    response = api(stack, token).post("/projects/all", params={"user_id": user_id}, json=body, **kwargs)
    assert response.status_code == 400 and response.json()["message"]


def test_non_integer_ids_are_rejected_with_json(stack, api, register):
    _user_id, token = register(stack, "hank")
    session = api(stack, token)
    assert session.get("/projects/abc").status_code == 404
    bad_user = session.get("/projects/all", params={"user_id": "abc"})
    assert bad_user.status_code == 400 and "user_id" in bad_user.json()["message"]


def test_legacy_mode_uses_user_id(legacy_stack, api, register):
    user_id, _token = register(legacy_stack, "ivy")
    session = api(legacy_stack)
    created = session.post("/projects/all", params={"user_id": user_id}, json={"title": "Legacy", "type": "Classification"})
    assert created.status_code == 201 and created.json()["user"] == user_id
    assert [p["title"] for p in session.get("/projects/all", params={"user_id": user_id}).json()] == ["Legacy"]
    assert session.get("/projects/all").status_code == 400
