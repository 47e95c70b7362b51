"""The three ways of turning a video into labelled frames that the video scenarios compare.

- `decode_only`: `grab()` through the whole file, the floor any splitter pays.
- `decode_encode`: `read()` every frame and JPEG-encode it as the worker does (quality 90), the
  floor of a splitter that keeps every frame.
- `seed_style`: the original backend's approach, reproduced: load the Keras model, `read()`
  (decode and convert) every frame, predict each sampled frame on its own, write it with
  `cv2.imwrite` and insert one MongoDB record for it.
- `studio`: ML Studio itself, through the gateway: upload the video, then watch its status
  until `done`, noting when the worker started on it.
- `studio_queue`: several copies of a video uploaded at once (a client each), watched until
  every one is `done`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pymongo

from .stack import Account

# The studio's status is read every POLL_FRACTION of the time elapsed (within these bounds): the
# figure is late by at most that fraction (never early), and watching costs the stack little
# (each look is a request through the gateway, a few ms of CPU across the services).
POLL_FRACTION = 0.05
POLL_BOUNDS_S = (0.04, 0.25)
PROCESSING_TIMEOUT_S = 600.0


def decode_only(path: Path) -> int:
    """Frames in the file, found by grabbing each one."""
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while capture.grab():
        frames += 1
    capture.release()
    return frames


def decode_encode(path: Path, quality: int = 90) -> int:
    """Frames in the file, each decoded and encoded as a JPEG (the worker's default quality)."""
    capture = cv2.VideoCapture(str(path))
    params = [int(cv2.IMWRITE_JPEG_QUALITY), quality]
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        ok, _encoded = cv2.imencode(".jpg", frame, params)
        frames += 1
    capture.release()
    return frames


def seed_style(
    path: Path,
    model_file: Path,
    labels: tuple[str, ...],
    size: int,
    interval: int,
    frames_dir: Path,
    records: pymongo.collection.Collection,
) -> int:
    """Splits `path` the original backend's way; returns the number of frames labelled."""
    import keras

    model = keras.models.load_model(model_file, compile=False)
    frames_dir.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(path))
    index = labelled = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % interval == 0:
            pixels = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (size, size)).astype(np.float32)
            scores = model.predict(pixels[np.newaxis], verbose=0)[0]
            best = int(np.argmax(scores))
            location = frames_dir / f"frame-{index}.jpg"
            cv2.imwrite(str(location), frame)
            records.insert_one(
                {
                    "title": f"frame {index}",
                    "type": labels[best],
                    "score": float(scores[best]),
                    "location": str(location),
                    "frame_index": index,
                }
            )
            labelled += 1
        index += 1
    capture.release()
    return labelled


@dataclass(frozen=True)
class StudioRun:
    """One video through the studio, seconds from the start of the upload."""

    video_id: int
    uploaded_s: float  # the upload's answer arrived
    started_s: float  # status first seen `processing` (the worker had claimed it)
    done_s: float  # status first seen `done`
    images: int

    @property
    def queued_s(self) -> float:
        return self.started_s - self.uploaded_s

    @property
    def processing_s(self) -> float:
        return self.done_s - self.started_s


def _upload(session, params: dict, model_id: int, path: Path, body: bytes, interval: int, content_type: str) -> int:
    """Uploads one video through the gateway; its id."""
    response = session.post(
        "/videos/all",
        params=params,
        data={"model_id": str(model_id), "interval": str(interval)},
        files={"file": (path.name, body, content_type)},
        timeout=PROCESSING_TIMEOUT_S,
    )
    if response.status_code not in (200, 202):
        raise RuntimeError(f"the upload answered {response.status_code}: {response.text[:500]}")
    return int(response.json()["video"]["id"])


def studio(
    account: Account, project_id: int, model_id: int, path: Path, interval: int, content_type: str = "video/mp4"
) -> StudioRun:
    """Uploads `path` through the gateway and waits (polling its status) until it is done."""
    params = {"user_id": account.user_id, "project_id": project_id}
    body = path.read_bytes()
    started = time.perf_counter()
    video_id = _upload(account.session, params, model_id, path, body, interval, content_type)
    uploaded = time.perf_counter() - started
    processing_seen = None
    deadline = started + PROCESSING_TIMEOUT_S
    while True:
        status, error = video_status(account, params, video_id)
        now = time.perf_counter() - started
        if status == "processing" and processing_seen is None:
            processing_seen = now
        if status == "done":
            break
        if status == "failed":
            raise RuntimeError(f"video {video_id} failed: {error}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"video {video_id} was still {status} after {PROCESSING_TIMEOUT_S:.0f} s")
        time.sleep(min(POLL_BOUNDS_S[1], max(POLL_BOUNDS_S[0], POLL_FRACTION * now)))
    images = len(account.session.get(f"/videos/{video_id}").json()["images"])
    # Done before it was ever seen processing: it started within one poll of the upload.
    return StudioRun(video_id, uploaded, processing_seen if processing_seen is not None else uploaded, now, images)


def video_status(account: Account, params: dict, video_id: int) -> tuple[str, str | None]:
    """The video's status from the project's video list (cheaper for the stack than the video
    with all its images, so watching disturbs what is watched as little as possible)."""
    response = account.session.get("/videos/all", params=params)
    if response.status_code != 200:
        raise RuntimeError(f"listing videos answered {response.status_code}: {response.text[:300]}")
    for video in response.json():
        if video["id"] == video_id:
            return video["status"], video.get("error")
    raise RuntimeError(f"video {video_id} is not in its project's list")


def studio_queue(
    account: Account, project_id: int, model_id: int, path: Path, interval: int, copies: int, content_type: str = "video/mp4"
) -> list[StudioRun]:
    """Uploads `copies` copies of `path` at once (a thread and a session each, as that many users
    would), then watches the project's list until all are done; each copy's times count from the
    common start."""
    from deploy.local.managed_stack import Api

    params = {"user_id": account.user_id, "project_id": project_id}
    body = path.read_bytes()
    sessions = [Api(account.session.base_url, account.token) for _ in range(copies)]
    uploaded: dict[int, tuple[int, float]] = {}
    failures: list[BaseException] = []
    started = time.perf_counter()

    def upload(copy: int) -> None:
        try:
            video_id = _upload(sessions[copy], params, model_id, path, body, interval, content_type)
            uploaded[copy] = (video_id, time.perf_counter() - started)
        except BaseException as exc:  # noqa: BLE001 - raised in the calling thread below
            failures.append(exc)

    threads = [threading.Thread(target=upload, args=(copy,)) for copy in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for session in sessions:
        session.close()
    if failures:
        raise failures[0]
    ids = {video_id: uploaded_s for video_id, uploaded_s in uploaded.values()}
    processing_seen: dict[int, float] = {}
    done: dict[int, float] = {}
    deadline = started + PROCESSING_TIMEOUT_S
    while len(done) < len(ids):
        response = account.session.get("/videos/all", params=params)
        if response.status_code != 200:
            raise RuntimeError(f"listing videos answered {response.status_code}: {response.text[:300]}")
        now = time.perf_counter() - started
        for video in response.json():
            video_id = video["id"]
            if video_id not in ids or video_id in done:
                continue
            if video["status"] == "processing":
                processing_seen.setdefault(video_id, now)
            elif video["status"] == "done":
                done[video_id] = now
            elif video["status"] == "failed":
                raise RuntimeError(f"video {video_id} failed: {video.get('error')}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{len(ids) - len(done)} of {len(ids)} videos were not done after {PROCESSING_TIMEOUT_S:.0f} s")
        if len(done) < len(ids):
            time.sleep(min(POLL_BOUNDS_S[1], max(POLL_BOUNDS_S[0], POLL_FRACTION * now)))
    return [
        StudioRun(video_id, uploaded_s, processing_seen.get(video_id, uploaded_s), done[video_id], images=0)
        for video_id, uploaded_s in sorted(ids.items(), key=lambda item: done[item[0]])
    ]
