"""The `/videos` REST adapter over the core with fakes: multipart uploads (streamed to disk),
response shapes, error JSON, and the signed media route with Range requests."""
import base64
import io
import json
import tracemalloc
import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest

from mlstudio.common import jobs
from video_service.app import create_app
from video_service.core import job_id
from video_service.settings import VideoSettings


def identity(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


@pytest.fixture
def settings(tmp_path):
    return VideoSettings(mongo_uri="mongodb://unused", data_dir=tmp_path / "data", max_upload_bytes=64 << 20)


@pytest.fixture
def client(world, settings):
    return create_app(settings, world.core).test_client()


def upload(client, content, user=1, project=10, filename="clip.mp4", query="", **fields):
    data = {"model_id": "7", "interval": "10", **fields}
    if content is not None:
        data["file"] = (io.BytesIO(content), filename, "video/mp4")
    return client.post(f"/videos/all?project_id={project}{query}", data=data, headers=identity(user), content_type="multipart/form-data")


def spooled_files(settings):
    return list(settings.tmp_dir.iterdir()) if settings.tmp_dir.exists() else []


def media_path(url):
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.path}?{parsed.query}"


def test_upload_answers_202_with_the_queued_video_and_no_images(client, light_dark_video, settings):
    response = upload(client, light_dark_video.read_bytes())
    assert response.status_code == 202
    body = response.get_json()
    assert body["images"] == []
    video = body["video"]
    assert set(video) >= {"id", "title", "description", "url", "type", "user", "project", "create_time", "status", "progress",
                          "frame_count", "fps", "interval", "model", "error"}
    assert (video["status"], video["progress"], video["title"], video["frame_count"]) == ("queued", {"done": 0, "total": 20}, "clip.mp4", 200)
    assert spooled_files(settings) == []  # the spooled upload is gone


def test_list_and_get_show_the_video(client, light_dark_video, world):
    video_id = upload(client, light_dark_video.read_bytes()).get_json()["video"]["id"]
    listed = client.get("/videos/all?project_id=10&user_id=1", headers=identity(1))
    assert [v["id"] for v in listed.get_json()] == [video_id]
    world.jobs.set(job_id(video_id), status=jobs.RUNNING, progress={"done": 5, "total": 20})
    got = client.get(f"/videos/{video_id}", headers=identity(1)).get_json()
    assert (got["video"]["status"], got["video"]["progress"], got["images"]) == ("processing", {"done": 5, "total": 20}, [])


def test_a_video_waiting_for_a_service_says_so_in_the_list_and_alone(client, light_dark_video, world):
    video_id = upload(client, light_dark_video.read_bytes()).get_json()["video"]["id"]
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    world.jobs.set(job_id(video_id), status=jobs.QUEUED, waiting={"reason": "the image service is unavailable", "since": since,
                                                                  "retry_at": since + timedelta(seconds=8), "waits": 2})
    expected = {"reason": "the image service is unavailable", "since": "2026-01-02T03:04:05.000Z", "retry_at": "2026-01-02T03:04:13.000Z"}
    listed = client.get("/videos/all?project_id=10&user_id=1", headers=identity(1)).get_json()
    assert listed[0]["waiting"] == expected and listed[0]["status"] == "queued"
    assert client.get(f"/videos/{video_id}", headers=identity(1)).get_json()["video"]["waiting"] == expected


def test_wait_answers_once_processing_has_ended(client, light_dark_video, world, monkeypatch):
    def finish(job_id_, timeout_s, poll_s=0.25):
        world.jobs.set(job_id_, status=jobs.DONE, progress={"done": 20, "total": 20})
        return world.jobs.get(job_id_)

    monkeypatch.setattr(world.jobs, "wait", finish)
    response = upload(client, light_dark_video.read_bytes(), wait="true")
    assert response.status_code == 200 and response.get_json()["video"]["status"] == "done"


def test_wait_as_a_query_parameter_too(client, light_dark_video, world):
    response = upload(client, light_dark_video.read_bytes(), query="&wait=true")
    assert response.status_code == 202 and response.get_json()["video"]["status"] == "queued"  # timed out (0.1 s) while queued


@pytest.mark.parametrize("content, fields, status, code", [
    (b"not a video, just words\n" * 40, {}, 415, "not_a_video"),
    (None, {}, 400, "file_missing"),
    ("light_dark", {"interval": "0"}, 400, "invalid_interval"),
    ("light_dark", {"model_id": "9"}, 404, "not_found"),
    ("light_dark", {"model_id": "8"}, 400, "model_type_mismatch"),
    ("truncated", {}, 422, "damaged_video"),
    (b"", {}, 422, "empty_file"),
    ("light_dark", {"interval": ""}, 400, "invalid_interval"),
    ("light_dark", {"interval_ms": ""}, 400, "invalid_interval_ms"),
    ("light_dark", {"wait": ""}, 400, "invalid_wait"),
])
def test_bad_uploads_are_refused_with_a_reason_and_nothing_stored(client, light_dark_video, world, settings, content, fields, status, code):
    if content == "light_dark":
        content = light_dark_video.read_bytes()
    elif content == "truncated":
        content = light_dark_video.read_bytes()[:3000]
    response = upload(client, content, **fields)
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert body["code"] == code and body["message"]
    assert world.repository.docs == {} and world.store.list_keys("") == []
    assert spooled_files(settings) == []


def test_an_upload_to_someone_elses_project_is_404_before_the_body_is_read(client, light_dark_video):
    response = upload(client, light_dark_video.read_bytes(), project=20)
    assert response.status_code == 404


def test_a_user_id_that_is_not_the_caller_is_403(client):
    assert client.get("/videos/all?project_id=10&user_id=2", headers=identity(1)).status_code == 403


def test_upload_must_be_multipart(client):
    response = client.post("/videos/all?project_id=10", json={"model_id": 7}, headers=identity(1))
    assert response.status_code == 400 and response.get_json()["code"] == "not_multipart"


def test_an_upload_over_the_limit_is_413(world, tmp_path, light_dark_video):
    small = VideoSettings(mongo_uri="mongodb://unused", data_dir=tmp_path / "d", max_upload_bytes=1000)
    response = upload(create_app(small, world.core).test_client(), light_dark_video.read_bytes())
    assert response.status_code == 413


def test_delete_answers_success_and_the_video_is_gone(client, light_dark_video):
    video_id = upload(client, light_dark_video.read_bytes()).get_json()["video"]["id"]
    assert client.delete(f"/videos/{video_id}", headers=identity(2)).status_code == 404
    response = client.delete(f"/videos/{video_id}", headers=identity(1))
    assert (response.status_code, response.get_json()) == (200, {"message": "success"})
    assert client.get(f"/videos/{video_id}", headers=identity(1)).status_code == 404


# ---- signed media with Range -------------------------------------------------------------------

@pytest.fixture
def video_url(client, light_dark_video):
    return media_path(upload(client, light_dark_video.read_bytes()).get_json()["video"]["url"])


def test_the_signed_url_serves_the_whole_file_without_a_token(client, video_url, light_dark_video):
    response = client.get(video_url)
    assert response.status_code == 200
    assert response.data == light_dark_video.read_bytes()
    assert response.headers["Accept-Ranges"] == "bytes" and response.headers["Content-Type"] == "video/mp4"
    assert int(response.headers["Content-Length"]) == light_dark_video.stat().st_size


def test_range_requests_answer_206_with_the_asked_bytes(client, video_url, light_dark_video):
    data = light_dark_video.read_bytes()
    size = len(data)
    cases = {"bytes=0-99": (0, 99), "bytes=100-": (100, size - 1), "bytes=-50": (size - 50, size - 1), f"bytes=10-{size + 500}": (10, size - 1)}
    for header, (start, end) in cases.items():
        response = client.get(video_url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.data == data[start:end + 1]
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert int(response.headers["Content-Length"]) == end - start + 1


def test_a_range_past_the_end_is_416(client, video_url, light_dark_video):
    size = light_dark_video.stat().st_size
    response = client.get(video_url, headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416 and response.headers["Content-Range"] == f"bytes */{size}"


def test_malformed_or_multiple_ranges_get_the_whole_file(client, video_url):
    for header in ("bytes=0-1,5-9", "lines=1-2", "bytes=9-1"):
        assert client.get(video_url, headers={"Range": header}).status_code == 200


def test_if_range_with_a_stale_etag_gets_the_whole_file(client, video_url):
    response = client.get(video_url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert response.status_code == 200
    etag = response.headers["ETag"]
    assert client.get(video_url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206


def test_browsers_cache_the_file_only_while_its_url_is_valid(client, video_url, world):
    expires = int(urllib.parse.parse_qs(urllib.parse.urlsplit(video_url).query)["expires"][0])
    now = world.core.clock()
    assert client.get(video_url).headers["Cache-Control"] == f"private, max-age={expires - int(now)}"
    world.core.clock = lambda: now + 1000  # the same URL, 1000 s on: less time left
    assert client.get(video_url).headers["Cache-Control"] == f"private, max-age={expires - int(now) - 1000}"


def test_a_bad_signature_or_another_video_is_403(client, video_url):
    tampered = video_url.replace("signature=", "signature=0")
    assert client.get(tampered).status_code == 403
    other = video_url.replace(video_url.split("/")[2], "999", 1)
    assert client.get(other).status_code == 403
    assert client.get(video_url.split("?")[0]).status_code == 403


# ---- memory: the body is parsed as a stream ----------------------------------------------------

class GeneratedMultipart(io.RawIOBase):
    """A multipart body produced while it is read: a `file` part of `size` bytes, never held."""

    def __init__(self, boundary: str, size: int, fields: dict):
        head = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n" for k, v in fields.items())
        head += f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\nContent-Type: video/mp4\r\n\r\n"
        self.parts = [head.encode(), None, f"\r\n--{boundary}--\r\n".encode()]
        self.remaining = size
        self.length = len(self.parts[0]) + size + len(self.parts[2])
        self.chunk = b"\x00" * (256 * 1024)

    def readable(self):
        return True

    def readinto(self, buffer):
        while self.parts:
            part = self.parts[0]
            if part is None:
                if self.remaining == 0:
                    self.parts.pop(0)
                    continue
                count = min(len(buffer), self.remaining, len(self.chunk))
                buffer[:count] = self.chunk[:count]
                self.remaining -= count
                return count
            if not part:
                self.parts.pop(0)
                continue
            count = min(len(buffer), len(part))
            buffer[:count] = part[:count]
            self.parts[0] = part[count:]
            return count
        return 0


def test_a_large_upload_is_spooled_to_disk_with_flat_memory(tmp_path, settings):
    from flask import Flask

    from video_service.api.multipart import SpooledUpload

    size = 48 << 20
    body = GeneratedMultipart("XyZ", size, {"model_id": "7", "interval": "10"})
    app = Flask("memory")
    environ_overrides = {"wsgi.input": io.BufferedReader(body, 1 << 16), "CONTENT_LENGTH": str(body.length),
                         "CONTENT_TYPE": "multipart/form-data; boundary=XyZ"}
    with app.test_request_context("/videos/all", method="POST", environ_overrides=environ_overrides):
        tracemalloc.start()
        with SpooledUpload(tmp_path / "spool") as spooled:
            spooled.read(64 << 20)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert spooled.path.stat().st_size == size
            assert spooled.fields == {"model_id": "7", "interval": "10"} and spooled.filename == "big.mp4"
        assert not spooled.path.exists()
    assert peak < 4 << 20, f"parsing a {size >> 20} MiB upload peaked at {peak >> 20} MiB"


def test_the_openapi_spec_documents_the_routes(client):
    spec = client.get("/docs/videos/swagger.json")
    assert spec.status_code == 200
    paths = spec.get_json()["paths"]
    assert {"/videos/all", "/videos/{video_id}", "/videos/{video_id}/file"} <= set(paths)
    assert {"file", "model_id", "interval", "interval_ms", "wait"} <= {p["name"] for p in paths["/videos/all"]["post"]["parameters"]}
