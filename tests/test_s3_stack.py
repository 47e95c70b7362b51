"""The whole stack on a real S3 server (issue 7's "S3 backend proven"): one end-to-end media flow
through the gateway with STORAGE_URL=s3://... pointing every service at a throwaway Ceph radosgw
(deploy/s3/radosgw.py), checked from both sides: what the API answers, and what the bucket holds
(read with our own S3 client). The local `<data_dir>/objects` directory must stay empty, so a
stack that quietly fell back to the disk cannot pass.

One flow, one stack start: the model service alone takes seconds to come up.
"""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from waiting import eventually

from mlstudio.common.storage import S3ObjectStore, open_store

pytestmark = [pytest.mark.integration, pytest.mark.s3]

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCESSING_TIMEOUT_S = 180


def image_bytes(fmt: str, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buffer, format=fmt)
    return buffer.getvalue()


def light_dark_video(path: Path, frames: int = 200, light: int = 100, size=(64, 48), fps: float = 25.0) -> bytes:
    """Frames 0..light-1 white, the rest black (mp4v): the sample model labels them light/dark.
    A top-level `free` atom of zeros (players skip it) makes it larger than one upload part, so
    the bucket gets it as a multipart upload, whose completion radosgw answers without an ETag."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), 255 if index < light else 0, np.uint8))
    writer.release()
    padding = S3ObjectStore.PART + (1 << 20)
    return path.read_bytes() + struct.pack(">I4s", padding, b"free") + bytes(padding - 8)


def sample_model(directory: Path) -> list[tuple[str, bytes]]:
    """The brightness classifier and its labels, written by the model service's own helper in a
    child process (TensorFlow stays out of the test process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "services" / "common"), str(REPO_ROOT / "services" / "model")])}
    subprocess.run([sys.executable, "-m", "model_service.sample_models", str(directory)], check=True, env=env, timeout=600,
                   capture_output=True)
    return [(name, (directory / name).read_bytes()) for name in ("light_dark.h5", "classLabel.txt")]


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_media_flow_on_s3(stack_factory, s3_server, api, register, tmp_path):
    stack = stack_factory(AUTH_REQUIRED="true", STORAGE_URL=s3_server.url)
    bucket = open_store(s3_server.url)
    user_id, token = register(stack, f"s3-{uuid.uuid4().hex[:8]}")
    session, anonymous = api(stack, token), api(stack)

    created = session.post("/projects/all", params={"user_id": user_id}, json={"title": "on s3", "description": "", "type": "Classification"})
    assert created.status_code in (200, 201), created.text
    project_id = created.json()["id"]
    params = {"user_id": user_id, "project_id": project_id}

    # Images: uploaded into a tag, listed, stored in the bucket, served by signed URL without a token.
    uploads = [("a.png", image_bytes("PNG", (10, 120, 200))), ("b.jpg", image_bytes("JPEG", (200, 30, 30)))]
    response = session.post("/images/Cat", params=params, files=[("files", upload) for upload in uploads])
    assert response.status_code == 201, response.text
    images = response.json()
    listed = session.get("/images/cat", params=params).json()
    assert [i["id"] for i in listed] == [i["id"] for i in images] and {i["type"] for i in listed} == {"cat"}
    assert bucket.list_keys(f"images/{project_id}/") == sorted(i["location"] for i in images)
    for image, (_, content) in zip(images, uploads, strict=True):
        loaded = anonymous.get(image["url"])
        assert loaded.status_code == 200 and loaded.content == content == bucket.get_bytes(image["location"])
        assert anonymous.get(image["url"], headers={"If-None-Match": loaded.headers["ETag"]}).status_code == 304

    # A dataset export streams its zip into the bucket (larger than one part: a multipart upload
    # fed from a pipe), downloads through its signed URL, and imports back into another project.
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)).save(noise, "PNG")
    assert len(noise.getvalue()) > S3ObjectStore.PART
    assert session.post("/images/noise", params=params, files=[("files", ("noise.png", noise.getvalue()))]).status_code == 201
    export = session.post(f"/projects/{project_id}/exports", json={"format": "imagenet"}).json()
    deadline = time.monotonic() + PROCESSING_TIMEOUT_S
    while export["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"the export is still {export['status']}"
        time.sleep(0.2)
        export = session.get(f"/projects/{project_id}/exports/{export['id']}").json()
    assert export["status"] == "done", export
    (zip_key,) = bucket.list_keys(f"exports/{project_id}/")
    assert bucket.stat(zip_key).size == export["size"] > S3ObjectStore.PART
    dataset = anonymous.get(export["url"])
    assert dataset.status_code == 200 and dataset.content == bucket.get_bytes(zip_key)
    copy = session.post("/projects/all", params={"user_id": user_id}, json={"title": "copy", "description": "", "type": "Classification"}).json()["id"]
    imported = session.post(f"/projects/{copy}/imports", files={"file": ("dataset.zip", dataset.content)}).json()
    while imported["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"the import is still {imported['status']}"
        time.sleep(0.2)
        imported = session.get(f"/projects/{copy}/imports/{imported['id']}").json()
    assert imported["status"] == "done" and imported["report"]["imported"] == 3, imported
    assert bucket.list_keys(f"imports/{copy}/") == []  # the uploaded zip goes when the import ends
    assert sorted(i["type"] for i in session.get("/images/all", params={"project_id": copy}).json()) == ["cat", "cat", "noise"]
    assert session.delete(f"/projects/{copy}").json() == {"message": "success"}
    assert session.delete("/images/noise", params=params).json() == {"message": "success"}

    # The model: its uploaded files land in the bucket too.
    model_files = sample_model(tmp_path / "models")
    response = session.post("/models/all", params={**params, "method": "upload"}, files=[("files", f) for f in model_files],
                            data={"title": "light/dark", "description": "", "type": "Classification"}, timeout=300)
    assert response.status_code in (200, 201), response.text
    model_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while (status := session.get(f"/models/{model_id}").json()["status"]) != "Trained":
        assert time.monotonic() < deadline, f"the sample model was never served (status {status})"
        time.sleep(0.5)
    assert bucket.list_keys(f"models/{model_id}/"), "the model's files are not in the bucket"

    # A video, split by the worker, which reads it from the bucket and writes its frames there.
    video_content = light_dark_video(tmp_path / "light-dark.mp4")
    response = session.post("/videos/all", params=params, files={"file": ("clip.mp4", video_content, "video/mp4")},
                            data={"model_id": str(model_id), "interval": "10", "wait": "true"}, timeout=PROCESSING_TIMEOUT_S + 60)
    assert response.status_code in (200, 202), response.text
    video_id = response.json()["video"]["id"]
    deadline = time.monotonic() + PROCESSING_TIMEOUT_S
    while (answer := session.get(f"/videos/{video_id}").json())["video"]["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"video {video_id} still {answer['video']['status']}"
        time.sleep(0.3)
    assert answer["video"]["status"] == "done", answer["video"]
    frames = answer["images"]
    assert [f["frame_index"] for f in frames] == list(range(0, 200, 10))
    assert [f["type"] for f in frames] == ["light"] * 10 + ["dark"] * 10
    by_video = session.get(f"/images/byVideo/{video_id}").json()["images"]
    assert sorted(i["id"] for i in by_video) == sorted(f["id"] for f in frames)
    assert bucket.list_keys(f"images/{project_id}/") == sorted([i["location"] for i in images] + [f["location"] for f in frames])
    assert anonymous.get(frames[0]["url"]).content == bucket.get_bytes(frames[0]["location"])

    (video_key,) = bucket.list_keys(f"videos/{project_id}/")
    assert bucket.get_bytes(video_key) == video_content
    assert bucket.stat(video_key).etag.endswith("-2"), "the video was not stored as a multipart upload"
    part = anonymous.get(answer["video"]["url"], headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == video_content[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(video_content)}"
    etag = part.headers["ETag"]
    assert etag.strip('"'), "the video has no ETag (radosgw's multipart answer has none; stat must supply one)"
    resumed = anonymous.get(answer["video"]["url"], headers={"Range": "bytes=-10", "If-Range": etag})
    assert resumed.status_code == 206 and resumed.content == video_content[-10:]

    # Nothing went to the local directory: the stack really used S3.
    assert files_under(stack.data_dir / "objects") == []

    # Deletes: each removes its objects from the bucket.
    assert session.delete(f"/videos/{video_id}").json() == {"message": "success"}
    assert session.get(answer["video"]["url"]).status_code == 404
    assert bucket.list_keys(f"videos/{project_id}/") == []
    assert bucket.list_keys(f"images/{project_id}/") == sorted(i["location"] for i in images)
    assert session.delete("/images/cat", params=params).json() == {"message": "success"}
    assert session.get("/images/all", params=params).json() == []
    assert anonymous.get(images[0]["url"]).status_code == 404
    assert session.delete(f"/models/{model_id}").json() == {"message": "success"}
    assert session.delete(f"/projects/{project_id}").json() == {"message": "success"}

    prefixes = (f"images/{project_id}/", f"videos/{project_id}/", f"models/{model_id}/", f"exports/{project_id}/", f"images/{copy}/")
    # The projects' data goes in the background, after their deletes answered.
    eventually(lambda: not any(bucket.list_keys(prefix) for prefix in prefixes), "the deleted projects' objects removed")
    assert files_under(stack.data_dir / "objects") == []
    assert session.get(f"/projects/{project_id}").status_code == 404
