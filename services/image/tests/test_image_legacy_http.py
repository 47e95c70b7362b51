"""The `/images` routes in legacy mode (`AUTH_REQUIRED=false`), as the original React UI calls
them: routes that name one image or video by id come without `user_id` and act for its owner;
a `user_id` or a token, when sent, is checked as always."""
import base64
import io
import json

import pytest
from image_fakes import build_world, image_bytes
from image_service.app import create_app
from image_service.core import NewFrame
from image_service.settings import ImageSettings


def identity(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


def client_of(world, auth_required):
    settings = ImageSettings(mongo_uri="mongodb://unused", max_upload_bytes=1 << 20, auth_required=auth_required)
    return create_app(settings, world.core).test_client()


@pytest.fixture
def legacy(world):
    return client_of(world, False)


def upload(client, tag="cat", user=1, project=10):
    data = {"files": [(io.BytesIO(image_bytes()), "a.png")]}
    response = client.post(f"/images/{tag}?user_id={user}&project_id={project}", data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()[0]


def test_id_only_image_routes_act_for_the_images_owner(legacy):
    image = upload(legacy)
    got = legacy.get(f"/images/{image['id']}")
    assert got.status_code == 200 and got.get_json()["id"] == image["id"]
    moved = legacy.put(f"/images/{image['id']}?type=Dog")
    assert moved.status_code == 200 and moved.get_json()["type"] == "dog"
    deleted = legacy.delete(f"/images/{image['id']}")
    assert deleted.status_code == 200 and deleted.get_json() == {"message": "success"}
    missing = legacy.get(f"/images/{image['id']}")
    assert missing.status_code == 404 and missing.get_json()["message"] == f"image {image['id']} not found"


def test_by_video_without_user_acts_for_the_videos_owner(legacy, world):
    world.core.create_frames(1, 10, [NewFrame(image_bytes("JPEG"), tag="cat", video_id=5, frame_index=3)])
    for path in ("/images/byVideo/5", "/images/byVideo?video_id=5"):
        answer = legacy.get(path)
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["type"] == "Classification" and [i["frame_index"] for i in answer.get_json()["date"]] == [3]
    assert legacy.get("/images/byVideo/404").status_code == 404


def test_by_video_without_a_video_service_finds_the_owner_by_the_frames():
    world = build_world(with_videos=False)
    client = client_of(world, False)
    world.core.create_frames(1, 11, [NewFrame(image_bytes("JPEG"), video_id=5, frame_index=0)])
    answer = client.get("/images/byVideo/5").get_json()
    assert answer["type"] == "Detection" and answer["date"][0]["type"] == "detected"
    assert client.get("/images/byVideo/6").status_code == 404


def test_a_named_user_or_a_token_is_still_checked(legacy):
    image = upload(legacy)
    assert legacy.get(f"/images/{image['id']}?user_id=2").status_code == 404
    assert legacy.delete(f"/images/{image['id']}", headers=identity(2)).status_code == 404
    assert legacy.get(f"/images/{image['id']}?user_id=2", headers=identity(1)).status_code == 403
    assert legacy.get("/images/byVideo/5?user_id=2").status_code == 404
    assert legacy.get(f"/images/{image['id']}").status_code == 200  # still there


def test_list_routes_still_need_a_user(legacy):
    response = legacy.get("/images/all?project_id=10")
    assert response.status_code == 400 and response.get_json()["message"] == "query parameter user_id is required"


def test_with_authentication_on_id_only_routes_need_a_token(world):
    client = client_of(world, True)
    image = upload(client_of(world, False))
    for response in (client.get(f"/images/{image['id']}"), client.delete(f"/images/{image['id']}"), client.get("/images/byVideo/5")):
        assert response.status_code == 401
    assert client.get(f"/images/{image['id']}", headers=identity(2)).status_code == 404
    assert client.get(f"/images/{image['id']}", headers=identity(1)).status_code == 200
