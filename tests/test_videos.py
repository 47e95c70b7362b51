"""The video service and its worker through the gateway, against the real local stack: the light
and dark video labelled by the brightness model (issue 5's "done when"), `wait=true`, Range
requests on the signed video URL, bad uploads that store nothing, two users' isolation, a real
H.264 video, deletes, and a worker killed in the middle of a video."""
from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pymongo
import pytest
from waiting import eventually

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]
VIDEO_FIELDS = {"id", "title", "description", "url", "type", "user", "project", "create_time", "status", "progress",
                "frame_count", "fps", "interval", "model", "error"}
PROCESSING_TIMEOUT_S = 180


def shared_data_dir() -> Path:
    for candidate in (REPO_ROOT / "shared" / "data", REPO_ROOT.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the shared test media are missing: expected {REPO_ROOT.parent / 'shared' / 'data'}")


def write_light_dark_video(path: Path, frames: int = 200, light: int = 100, size=(64, 48), fps: float = 25.0) -> Path:
    """Frames 0..light-1 white, the rest black (mp4v)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), 255 if index < light else 0, np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """The test videos and the sample models (written by the model service's own helper, in a
    child process so TensorFlow stays out of the test process)."""
    root = tmp_path_factory.mktemp("video-media")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "services" / "common"), str(REPO_ROOT / "services" / "model")])}
    subprocess.run([sys.executable, "-m", "model_service.sample_models", str(root / "models")], check=True, env=env, timeout=600,
                   capture_output=True)
    light_dark = write_light_dark_video(root / "light-dark.mp4")
    zero = root / "zero.mp4"
    cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48)).release()
    return {
        "light_dark": light_dark,
        "long_light_dark": write_light_dark_video(root / "long-light-dark.mp4", frames=400, light=200),
        "zero_frames": zero,
        "models": root / "models",
    }


class Account:
    """A registered user and the sample models they uploaded (once per module: converting a model
    takes a while), by project type."""

    def __init__(self, stack, api, register, media, types=("Classification",)):
        self.user_id, token = register(stack, f"vid-{uuid.uuid4().hex[:8]}")
        self.session = api(stack, token)
        self.models = {}
        for project_type in types:
            project_id = self.new_project(project_type)
            self.models[project_type] = self._upload_model(media["models"], project_id, project_type)

    def new_project(self, project_type: str) -> int:
        created = self.session.post("/projects/all", params={"user_id": self.user_id},
                                    json={"title": "videos", "description": "", "type": project_type})
        assert created.status_code in (200, 201), created.text
        return created.json()["id"]

    def _upload_model(self, models: Path, project_id: int, project_type: str) -> int:
        model, labels = ("light_dark.h5", "classLabel.txt") if project_type == "Classification" else ("detector.zip", "detector_labels.txt")
        files = [("files", (model, (models / model).read_bytes())), ("files", (labels, (models / labels).read_bytes()))]
        response = self.session.post("/models/all", params={"user_id": self.user_id, "project_id": project_id, "method": "upload"},
                                     files=files, data={"title": "sample", "description": "", "type": project_type}, timeout=300)
        assert response.status_code in (200, 201), response.text
        model_id = response.json()["id"]
        deadline = time.monotonic() + 120
        while self.session.get(f"/models/{model_id}").json()["status"] != "Trained":
            assert time.monotonic() < deadline, "the sample model was never served"
            time.sleep(0.5)
        return model_id


class Owner:
    """An account's new project of `project_type`, with the account's model for it."""

    def __init__(self, account: Account, project_type="Classification"):
        self.account = account
        self.user_id = account.user_id
        self.session = account.session
        self.project_id = account.new_project(project_type)
        self.model_id = account.models[project_type]

    def params(self, **extra):
        return {"user_id": self.user_id, "project_id": self.project_id, **extra}

    def upload(self, path: Path | None = None, *, content: bytes | None = None, filename="clip.mp4", **fields):
        data = {"model_id": str(self.model_id), "interval": "10", **{k: str(v) for k, v in fields.items()}}
        body = content if content is not None else path.read_bytes()
        return self.session.post("/videos/all", params=self.params(), data=data, files={"file": (filename, body, "video/mp4")},
                                 timeout=PROCESSING_TIMEOUT_S + 60)

    def video(self, video_id: int) -> dict:
        response = self.session.get(f"/videos/{video_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_until_processed(self, video_id: int, timeout_s: float = PROCESSING_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.video(video_id)
            if answer["video"]["status"] in ("done", "failed"):
                return answer
            assert time.monotonic() < deadline, f"video {video_id} still {answer['video']['status']}: {answer['video']['progress']}"
            time.sleep(0.3)


@pytest.fixture(scope="module")
def account(stack_factory, api, register, media):
    return Account(stack_factory(AUTH_REQUIRED="true"), api, register, media, types=("Classification", "Detection"))


@pytest.fixture(scope="module")
def other_account(stack_factory, api, register, media):
    return Account(stack_factory(AUTH_REQUIRED="true"), api, register, media)


@pytest.fixture
def owner(stack, account):
    return Owner(account)


def video_db(stack):
    client = pymongo.MongoClient("127.0.0.1", int(stack.ports["MONGO_PORT"]), directConnection=True, serverSelectionTimeoutMS=5000)
    return client["mlstudio_video"]


def stored_videos(stack, project_id) -> list[str]:
    prefix = stack.data_dir / "objects" / "videos" / str(project_id)
    return sorted(p.name for p in prefix.iterdir()) if prefix.exists() else []


def assert_light_dark_frames(images: list[dict], video_id: int, step: int = 10, frames: int = 200) -> None:
    assert [image["frame_index"] for image in images] == list(range(0, frames, step))
    half = frames // step // 2
    assert [image["type"] for image in images] == ["light"] * half + ["dark"] * half
    assert all(image["video"] == video_id and image["score"] > 0.9 for image in images)


def assert_shown_as_the_image_service_shows_them(owner, answer: dict) -> None:
    """A video's `images` are the image service's Images of that video, field for field."""
    listed = owner.session.get(f"/images/byVideo/{answer['video']['id']}").json()["images"]
    by_id = {image["id"]: image for image in listed}
    fields = ("id", "title", "location", "type", "user", "project", "isTrain", "captions", "boxes", "video", "frame_index",
              "timestamp_ms", "score", "detections")
    assert sorted(by_id) == sorted(image["id"] for image in answer["images"])
    assert [{k: image[k] for k in fields} for image in answer["images"]] == [{k: by_id[image["id"]][k] for k in fields} for image in answer["images"]]


# ---- issue 5's "done when" ---------------------------------------------------------------------

def test_light_dark_video_is_split_into_ten_light_and_ten_dark_images(stack, owner, media):
    response = owner.upload(media["light_dark"], interval=10)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["images"] == [] and VIDEO_FIELDS <= set(queued["video"])
    assert (queued["video"]["status"], queued["video"]["type"], queued["video"]["model"]) == ("queued", "Classification", owner.model_id)
    video_id = queued["video"]["id"]

    answer = owner.wait_until_processed(video_id)
    video = answer["video"]
    assert (video["status"], video["error"], video["progress"], video["frame_count"], video["interval"]) == ("done", None, {"done": 20, "total": 20}, 200, 10)
    assert_light_dark_frames(answer["images"], video_id)
    assert [image["timestamp_ms"] for image in answer["images"][:2]] == [0, 400]

    ids = sorted(image["id"] for image in answer["images"])
    by_path = owner.session.get(f"/images/byVideo/{video_id}").json()
    by_query = owner.session.get("/images/byVideo", params={"video_id": video_id}).json()
    assert by_path["type"] == "Classification"
    assert sorted(image["id"] for image in by_path["date"]) == ids == sorted(image["id"] for image in by_query["date"])
    assert_shown_as_the_image_service_shows_them(owner, answer)
    listed = owner.session.get("/videos/all", params=owner.params()).json()
    assert [(v["id"], v["status"]) for v in listed] == [(video_id, "done")]


def test_wait_true_answers_when_done_with_every_image(owner, media):
    response = owner.upload(media["light_dark"], interval=10, wait="true")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["video"]["status"] == "done"
    assert_light_dark_frames(answer["images"], answer["video"]["id"])


def test_a_chunked_upload_without_content_length_works(owner, media):
    body = PaddedVideoUpload(media["light_dark"].read_bytes(), 1 << 20, {"model_id": owner.model_id, "interval": 10})

    def chunks():
        while chunk := body.read(64 * 1024):
            yield chunk

    response = owner.session.post("/videos/all", params=owner.params(), data=chunks(), headers={"Content-Type": body.content_type})
    assert response.status_code == 202, response.text
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.json()["video"]["size"] == body.file_size


def test_sampling_by_time(owner, media):
    answer = owner.upload(media["light_dark"], interval_ms=1000, wait="true").json()  # 25 fps, 8 s
    assert [image["frame_index"] for image in answer["images"]] == [0, 25, 50, 75, 100, 125, 150, 175]
    assert answer["video"]["interval_ms"] == 1000


def test_dedupe_gives_one_frame_per_static_shot_not_hundreds(owner, media):
    answer = owner.upload(media["light_dark"], interval=1, dedupe="true", wait="true").json()  # 200 frames, 2 shots
    assert [(image["frame_index"], image["type"]) for image in answer["images"]] == [(0, "light"), (100, "dark")]
    video = answer["video"]
    assert (video["status"], video["dedupe"], video["duplicates_skipped"]) == ("done", True, 198)
    assert video["progress"] == {"done": 2, "total": 2}


def test_the_real_bottle_video_decodes_every_frame(owner):
    answer = owner.upload(shared_data_dir() / "bottle-detection.mp4", filename="bottle-detection.mp4", interval=10, wait="true").json()
    video = answer["video"]
    assert (video["status"], video["frame_count"], video["progress"]) == ("done", 1189, {"done": 119, "total": 119})
    assert [image["frame_index"] for image in answer["images"]][-1] == 1180 and len(answer["images"]) == 119


def test_a_detection_project_stores_detections(stack, account, media):
    detector_owner = Owner(account, project_type="Detection")
    answer = detector_owner.upload(media["light_dark"], interval=50, wait="true").json()
    assert answer["video"]["status"] == "done", answer["video"]
    light, dark = answer["images"][0], answer["images"][-1]
    best = light["detections"][0]
    assert light["type"] == "detected" and best["label"] == "bottle" and best["score"] > 0.9
    assert light["captions"] == f",bottle {best['score']:.3f}" and light["boxes"].startswith(",[")
    assert dark["type"] == "detected" and dark["detections"] == [] and dark["captions"] == ""
    assert_shown_as_the_image_service_shows_them(detector_owner, answer)


# ---- playback ----------------------------------------------------------------------------------

def test_the_video_url_plays_without_a_token_and_seeks_with_range(api, stack, owner, media):
    video = owner.upload(media["light_dark"]).json()["video"]
    content = media["light_dark"].read_bytes()
    anonymous = api(stack)
    whole = anonymous.get(video["url"])
    assert whole.status_code == 200 and whole.content == content and whole.headers["Accept-Ranges"] == "bytes"
    part = anonymous.get(video["url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == content[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(content)}"
    tail = anonymous.get(video["url"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == content[-10:]
    beyond = anonymous.get(video["url"], headers={"Range": f"bytes={len(content)}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(content)}"
    assert anonymous.get(video["url"].replace("signature=", "signature=00")).status_code == 403


# ---- bad inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("case, status, code", [
    ("text", 415, "not_a_video"),
    ("truncated", 422, "damaged_video"),
    ("real_truncated", 422, "damaged_video"),
    ("huge_frames", 422, "frame_too_large"),
    ("zero_frames", 422, None),
    ("interval_zero", 400, "invalid_interval"),
    ("interval_empty", 400, "invalid_interval"),
    ("unknown_model", 404, "not_found"),
    ("no_file", 400, "file_missing"),
])
def test_bad_uploads_are_refused_with_a_reason_and_leave_nothing(stack, owner, media, tmp_path, case, status, code):
    content = media["light_dark"].read_bytes()
    fields = {}
    if case == "text":
        response = owner.upload(content=b"this is a text file, not a video\n" * 100, filename="notes.txt")
    elif case == "truncated":
        response = owner.upload(content=content[: len(content) // 2])
    elif case == "real_truncated":  # the first 100 kB of a real H.264 MP4 whose index comes first: 12 of 377 frames decode
        with open(shared_data_dir() / "car-detection.mp4", "rb") as handle:
            response = owner.upload(content=handle.read(100_000))
    elif case == "huge_frames":  # 52 million pixels a frame, more than the default limit of 50 million
        huge = tmp_path / "huge.avi"
        writer = cv2.VideoWriter(str(huge), cv2.VideoWriter_fourcc(*"MJPG"), 1, (10_000, 5_200))
        writer.write(np.zeros((5_200, 10_000, 3), np.uint8))
        writer.release()
        response = owner.upload(huge, filename="huge.avi")
    elif case == "zero_frames":
        response = owner.upload(media["zero_frames"])
    elif case == "no_file":
        response = owner.session.post("/videos/all", params=owner.params(), data={"model_id": owner.model_id, "interval": 10},
                                      files={"other": ("x.txt", b"x")})
    else:
        fields = {"interval_zero": {"interval": 0}, "interval_empty": {"interval": ""}, "unknown_model": {"model_id": 987654}}[case]
        response = owner.upload(media["light_dark"], **fields)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["message"] and (code is None or body["code"] == code)
    assert owner.session.get("/videos/all", params=owner.params()).json() == []
    assert stored_videos(stack, owner.project_id) == []


def test_another_users_private_model_cannot_label_my_video(owner, other_account, media):
    response = owner.upload(media["light_dark"], model_id=other_account.models["Classification"])
    assert response.status_code == 404 and "model" in response.json()["message"]


def test_a_detection_model_cannot_label_a_classification_project(owner, account, media):
    response = owner.upload(media["light_dark"], model_id=account.models["Detection"])
    assert response.status_code == 400 and response.json()["code"] == "model_type_mismatch"


def test_a_model_deleted_before_processing_fails_the_video_with_a_clear_error(stack, api, register, media):
    doomed = Owner(Account(stack, api, register, media))
    stack_worker = stack.state()["processes"]["video-worker"]
    os.kill(stack_worker, signal.SIGSTOP)  # the job stays queued while its model goes
    try:
        video_id = doomed.upload(media["light_dark"]).json()["video"]["id"]
        assert doomed.session.delete(f"/models/{doomed.model_id}").json() == {"message": "success"}
    finally:
        os.kill(stack_worker, signal.SIGCONT)
    answer = doomed.wait_until_processed(video_id)
    assert answer["video"]["status"] == "failed"
    assert f"model {doomed.model_id}" in answer["video"]["error"] and answer["images"] == []
    assert doomed.session.get("/images/all", params=doomed.params()).json() == []


# ---- isolation and deletes ---------------------------------------------------------------------

def test_another_user_can_neither_see_nor_delete_my_video(stack, api, owner, other_account, media):
    video_id = owner.upload(media["light_dark"]).json()["video"]["id"]
    intruder = Owner(other_account)
    assert intruder.session.get(f"/videos/{video_id}").status_code == 404
    assert intruder.session.delete(f"/videos/{video_id}").status_code == 404
    assert intruder.session.get("/videos/all", params={"user_id": intruder.user_id, "project_id": owner.project_id}).status_code == 404
    assert intruder.session.get("/videos/all", params=owner.params()).status_code == 403  # user_id is not the caller
    stolen = intruder.session.post("/videos/all", params={"user_id": intruder.user_id, "project_id": owner.project_id},
                                   data={"model_id": intruder.model_id, "interval": 10},
                                   files={"file": ("clip.mp4", media["light_dark"].read_bytes(), "video/mp4")})
    assert stolen.status_code == 404
    assert owner.video(video_id)["video"]["id"] == video_id
    assert api(stack).get(f"/videos/{video_id}").status_code == 401


def test_delete_removes_the_video_its_file_its_job_and_its_images(stack, owner, media):
    answer = owner.upload(media["light_dark"], wait="true").json()
    video_id, url = answer["video"]["id"], answer["video"]["url"]
    assert len(answer["images"]) == 20 and stored_videos(stack, owner.project_id)
    response = owner.session.delete(f"/videos/{video_id}")
    assert (response.status_code, response.json()) == (200, {"message": "success"})
    assert owner.session.get(f"/videos/{video_id}").status_code == 404
    assert owner.session.get(url).status_code == 404
    assert owner.session.get("/images/all", params=owner.params()).json() == []
    assert stored_videos(stack, owner.project_id) == []
    assert video_db(stack).jobs.count_documents({"_id": f"video-{video_id}"}) == 0


def test_deleting_the_project_deletes_its_videos(stack, owner, media):
    owner.upload(media["light_dark"], wait="true")
    assert owner.session.delete(f"/projects/{owner.project_id}").json() == {"message": "success"}
    # The delete answers once the project is hidden; its data goes in the background.
    eventually(lambda: video_db(stack).videos.count_documents({"project": owner.project_id}) == 0
               and stored_videos(stack, owner.project_id) == [], "the project's videos deleted with it")


# ---- a worker killed in the middle of a video ----------------------------------------------------

def test_a_killed_worker_leaves_a_job_that_completes_without_duplicates(stack, owner, media, tmp_path):
    stack_worker = stack.state()["processes"]["video-worker"]
    os.kill(stack_worker, signal.SIGSTOP)  # only our workers take jobs during this test
    ours: list[subprocess.Popen] = []
    try:
        # Small batches and a short lease: many checkpoints, and a quick take-over.
        settings = {"VIDEO_BATCH_SIZE": "4", "VIDEO_JOB_LEASE_S": "2", "VIDEO_WORKER_ID": "doomed"}
        ours.append(stack.start_component("video-worker", tmp_path / "doomed.log", **settings))
        video_id = owner.upload(media["long_light_dark"], interval=1).json()["video"]["id"]
        deadline = time.monotonic() + PROCESSING_TIMEOUT_S
        while owner.video(video_id)["video"]["progress"]["done"] < 40:
            assert time.monotonic() < deadline and ours[0].poll() is None, (tmp_path / "doomed.log").read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(ours[0].pid, signal.SIGKILL)
        ours[0].wait()
        job = video_db(stack).jobs.find_one({"_id": f"video-{video_id}"})
        assert job["status"] == "running" and job["owner"] == "doomed" and 40 <= job["progress"]["done"] < 400, job

        ours.append(stack.start_component("video-worker", tmp_path / "restarted.log", VIDEO_WORKER_ID="restarted"))
        answer = owner.wait_until_processed(video_id)
    finally:
        for process in ours:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
        os.kill(stack_worker, signal.SIGCONT)
    assert answer["video"]["status"] == "done", answer["video"]
    assert_light_dark_frames(answer["images"], video_id, step=1, frames=400)
    assert len({image["id"] for image in answer["images"]}) == 400
    job = video_db(stack).jobs.find_one({"_id": f"video-{video_id}"})
    assert (job["attempts"], job["owner"], job["progress"]) == (2, None, {"done": 400, "total": 400})


def test_a_killed_worker_with_two_slots_leaves_both_of_its_jobs_to_be_finished(stack, owner, media, tmp_path):
    stack_worker = stack.state()["processes"]["video-worker"]
    os.kill(stack_worker, signal.SIGSTOP)  # only our workers take jobs during this test
    ours: list[subprocess.Popen] = []
    try:
        # Both videos are queued before the worker starts, so its two slots take them together.
        video_ids = [owner.upload(media["long_light_dark"], interval=1).json()["video"]["id"] for _ in range(2)]
        settings = {"VIDEO_BATCH_SIZE": "4", "VIDEO_JOB_LEASE_S": "2", "VIDEO_WORKER_ID": "doomed", "VIDEO_JOB_SLOTS": "2"}
        ours.append(stack.start_component("video-worker", tmp_path / "doomed.log", **settings))
        deadline = time.monotonic() + PROCESSING_TIMEOUT_S
        # Both advance at once: each has stored frames while the other is still going.
        while min(owner.video(video_id)["video"]["progress"]["done"] for video_id in video_ids) < 40:
            assert time.monotonic() < deadline and ours[0].poll() is None, (tmp_path / "doomed.log").read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(ours[0].pid, signal.SIGKILL)
        ours[0].wait()
        killed = [video_db(stack).jobs.find_one({"_id": f"video-{video_id}"}) for video_id in video_ids]
        assert {job["owner"] for job in killed} == {"doomed", "doomed#1"}, killed
        assert all(job["status"] == "running" and 40 <= job["progress"]["done"] < 400 for job in killed), killed

        ours.append(stack.start_component("video-worker", tmp_path / "restarted.log", VIDEO_WORKER_ID="restarted"))
        answers = [owner.wait_until_processed(video_id) for video_id in video_ids]
    finally:
        for process in ours:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
        os.kill(stack_worker, signal.SIGCONT)
    for video_id, answer in zip(video_ids, answers, strict=True):
        assert answer["video"]["status"] == "done", answer["video"]
        assert_light_dark_frames(answer["images"], video_id, step=1, frames=400)
        assert len({image["id"] for image in answer["images"]}) == 400
        job = video_db(stack).jobs.find_one({"_id": f"video-{video_id}"})
        # Two attempts at least (the killed one and the restarted worker's); a busy machine can let a
        # 2-second lease lapse before the kill, which adds one without changing the outcome.
        assert job["attempts"] >= 2 and (job["owner"], job["progress"]) == (None, {"done": 400, "total": 400}), job


# ---- a service the worker needs goes down in the middle of a video --------------------------------

class Outage:
    """A TCP port in front of `target` that can go down (refusing connections and cutting those
    open, as a service that stops does) and come back: the worker's way to a peer service."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self._reserve()  # refuses connections until it listens
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.accepting = False

    def up(self) -> None:
        with self.lock:
            self.accepting = True
            self.listener.listen(16)
            threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            self.accepting = False
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            except OSError:
                pass
            self.listener.close()
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                connection.close()
            self.connections.clear()
            self._reserve()  # the port stays ours, refusing connections, until it is up again

    def _reserve(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: the service is down
            upstream = socket.create_connection(self.target)
            with self.lock:
                if not self.accepting:
                    client.close()
                    upstream.close()
                    return
                self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_a_video_waits_for_a_model_service_that_went_down_and_finishes_when_it_is_back(stack, owner, media, tmp_path):
    model_service = Outage(("127.0.0.1", int(stack.ports["MODEL_GRPC_PORT"])))
    model_service.up()
    stack_worker = stack.state()["processes"]["video-worker"]
    os.kill(stack_worker, signal.SIGSTOP)  # only our worker takes jobs during this test
    worker = None
    try:
        # One attempt only: a wait that used up attempts would fail the video at once.
        worker = stack.start_component("video-worker", tmp_path / "patient.log", VIDEO_WORKER_ID="patient", VIDEO_BATCH_SIZE="4",
                                       MODEL_GRPC_ADDR=f"127.0.0.1:{model_service.port}", VIDEO_JOB_MAX_ATTEMPTS="1",
                                       VIDEO_JOB_RETRY_DELAY_S="0.2", VIDEO_JOB_MAX_DEPENDENCY_DELAY_S="1")
        video_id = owner.upload(media["long_light_dark"], interval=1).json()["video"]["id"]
        deadline = time.monotonic() + PROCESSING_TIMEOUT_S
        while owner.video(video_id)["video"]["progress"]["done"] < 40:
            assert time.monotonic() < deadline and worker.poll() is None, (tmp_path / "patient.log").read_text()[-3000:]
            time.sleep(0.05)
        model_service.down()

        while not ((job := video_db(stack).jobs.find_one({"_id": f"video-{video_id}"})).get("waiting") or {}).get("waits", 0) >= 3:
            assert time.monotonic() < deadline and job["status"] != "failed", job
            time.sleep(0.1)
        assert job["attempts"] <= 1, job  # three tries and more, no attempt used up
        waiting = owner.video(video_id)
        video = waiting["video"]
        assert video["status"] in ("queued", "processing") and video["error"] is None, video
        assert "the model service is unavailable" in video["waiting"]["reason"] and video["waiting"]["since"] <= video["waiting"]["retry_at"]
        assert 40 <= video["progress"]["done"] == len(waiting["images"]) < 400  # the frames made so far stay

        model_service.up()
        answer = owner.wait_until_processed(video_id)
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        os.kill(stack_worker, signal.SIGCONT)
        model_service.down()
    assert answer["video"]["status"] == "done" and answer["video"]["waiting"] is None, answer["video"]
    assert_light_dark_frames(answer["images"], video_id, step=1, frames=400)
    job = video_db(stack).jobs.find_one({"_id": f"video-{video_id}"})
    assert (job["attempts"], job["progress"], "waiting" in job) == (1, {"done": 400, "total": 400}, False)


# ---- a large upload keeps the service's memory flat ----------------------------------------------

class PaddedVideoUpload(io.RawIOBase):
    """A multipart body whose `file` is a real MP4 followed by a top-level `free` atom of `padding`
    zero bytes (players skip it), produced while it is read: gigabytes without holding them."""

    def __init__(self, video: bytes, padding: int, fields: dict, boundary: str = "mlstudio-large-upload"):
        self.content_type = f"multipart/form-data; boundary={boundary}"
        head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items())
        head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="large.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
        atom = struct.pack(">I4sQ", 1, b"free", padding + 16)
        self.file_size = len(video) + len(atom) + padding
        self.pieces = [head.encode() + video + atom, padding, f"\r\n--{boundary}--\r\n".encode()]
        self.length = len(self.pieces[0]) + padding + len(self.pieces[2])
        self.zeros = bytes(1 << 20)

    def __len__(self):
        return self.length

    def readable(self):
        return True

    def readinto(self, buffer):
        while self.pieces:
            piece = self.pieces[0]
            if isinstance(piece, int):
                if piece == 0:
                    self.pieces.pop(0)
                    continue
                count = min(len(buffer), piece, len(self.zeros))
                buffer[:count] = self.zeros[:count]
                self.pieces[0] = piece - count
                return count
            if not piece:
                self.pieces.pop(0)
                continue
            count = min(len(buffer), len(piece))
            buffer[:count] = piece[:count]
            self.pieces[0] = piece[count:]
            return count
        return 0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class PeakRss(threading.Thread):
    """Samples a process's resident memory until stopped; `peak` is the highest seen."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_bytes(pid)
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pid))


def test_a_gigabyte_upload_through_the_gateway_keeps_memory_flat(stack, owner, media):
    service = stack.state()["processes"]["video"]
    body = PaddedVideoUpload(media["light_dark"].read_bytes(), 1 << 30, {"model_id": owner.model_id, "interval": 10})
    before = rss_bytes(service)
    sampler = PeakRss(service)
    sampler.start()
    try:
        response = owner.session.post("/videos/all", params=owner.params(), data=body, headers={"Content-Type": body.content_type}, timeout=900)
    finally:
        sampler.done.set()
        sampler.join()
    assert response.status_code == 202, response.text
    video = response.json()["video"]
    assert video["size"] == body.file_size > 1 << 30
    growth = sampler.peak - before
    assert growth < 64 << 20, f"the video service grew by {growth >> 20} MiB while receiving {body.file_size >> 20} MiB"

    answer = owner.wait_until_processed(video["id"], timeout_s=600)
    assert answer["video"]["status"] == "done", answer["video"]
    assert_light_dark_frames(answer["images"], video["id"])
    tail = owner.session.get(video["url"], headers={"Range": "bytes=-32"})
    assert tail.status_code == 206 and tail.content == bytes(32)
    assert owner.session.delete(f"/videos/{video['id']}").json() == {"message": "success"}
