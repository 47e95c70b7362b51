"""The `/videos` routes as the original React UI calls them: `submittedAt` on every Video, and in
legacy mode (`AUTH_REQUIRED=false`) `GET/DELETE /videos/<id>` without `user_id` act for the
video's owner, while a `user_id` or a token, when sent, is checked as always."""
import base64
import io
import json

import pytest

from video_service.app import create_app
from video_service.settings import VideoSettings


def identity(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


def client_of(world, tmp_path, auth_required):
    settings = VideoSettings(mongo_uri="mongodb://unused", data_dir=tmp_path / "data", max_upload_bytes=64 << 20, auth_required=auth_required)
    return create_app(settings, world.core).test_client()


@pytest.fixture
def legacy(world, tmp_path):
    return client_of(world, tmp_path, False)


def upload(client, content, user=1, project=10):
    data = {"model_id": "7", "interval": "10", "file": (io.BytesIO(content), "clip.mp4", "video/mp4")}
    response = client.post(f"/videos/all?user_id={user}&project_id={project}", data=data, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    return response.get_json()["video"]


def test_a_video_carries_submitted_at_its_upload_time(legacy, light_dark_video):
    video = upload(legacy, light_dark_video.read_bytes())
    assert video["submittedAt"] == video["create_time"] and video["submittedAt"].endswith("Z")
    listed = legacy.get("/videos/all?user_id=1&project_id=10").get_json()
    assert [v["submittedAt"] for v in listed] == [video["create_time"]]


def test_id_only_routes_act_for_the_videos_owner(legacy, light_dark_video):
    video = upload(legacy, light_dark_video.read_bytes())
    got = legacy.get(f"/videos/{video['id']}")
    assert got.status_code == 200 and got.get_json()["video"]["id"] == video["id"]
    assert got.get_json()["video"]["submittedAt"] == video["create_time"]
    deleted = legacy.delete(f"/videos/{video['id']}")
    assert deleted.status_code == 200 and deleted.get_json() == {"message": "success"}
    missing = legacy.get(f"/videos/{video['id']}")
    assert missing.status_code == 404 and missing.get_json()["message"] == f"video {video['id']} not found"


def test_a_named_user_or_a_token_is_still_checked(legacy, light_dark_video, world, tmp_path):
    video = upload(legacy, light_dark_video.read_bytes())
    assert legacy.get(f"/videos/{video['id']}?user_id=2").status_code == 404
    assert legacy.delete(f"/videos/{video['id']}", headers=identity(2)).status_code == 404
    assert legacy.get(f"/videos/{video['id']}").status_code == 200  # not deleted
    authenticated = client_of(world, tmp_path, True)
    assert authenticated.get(f"/videos/{video['id']}").status_code == 401
    assert authenticated.get(f"/videos/{video['id']}", headers=identity(1)).status_code == 200
