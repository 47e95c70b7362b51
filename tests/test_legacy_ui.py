"""The original React UI's calls, replayed through the gateway in the order a user makes them.

In legacy mode (`AUTH_REQUIRED=false`) the UI keeps its token in a cookie and never sends it; it
names the user on list and create routes (`user_id`) and nothing on routes that take an id
(`GET /projects/45`, `DELETE /images/632`, `GET /videos/125`, ...), which then act for the owner
of the resource they name. Each step checks the fields the UI reads. With authentication on, the
same id-only calls with another user's token answer 404 (403 for a `user_id` that is not the
token's), as before.
"""
from __future__ import annotations

import io
import os
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

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCESSING_TIMEOUT_S = 180


def png(value: int, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, "PNG")
    return out.getvalue()


def light_dark_video(path: Path, frames: int = 100, size=(64, 48), fps: float = 25.0) -> Path:
    """The first half of the frames white, the rest black."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), 255 if index < frames // 2 else 0, np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The sample models (written by the model service's own helper in a child process, so
    TensorFlow stays out of the test process) and a light/dark video."""
    root = tmp_path_factory.mktemp("legacy-ui")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "services" / "common"), str(REPO_ROOT / "services" / "model")])}
    subprocess.run([sys.executable, "-m", "model_service.sample_models", str(root / "models")], check=True, env=env, timeout=600,
                   capture_output=True)
    return {"models": root / "models", "video": light_dark_video(root / "light-dark.mp4")}


class UI:
    """The original UI's calls: `user_id` on list and create routes, nothing on id-only routes."""

    def __init__(self, session, user_id: int):
        self.session = session
        self.user_id = user_id

    def ok(self, response, *statuses: int) -> dict | list:
        assert response.status_code in (statuses or (200,)), response.text
        return response.json()

    def scope(self, project_id: int, **extra) -> dict:
        return {"user_id": self.user_id, "project_id": project_id, **extra}

    def new_project(self, title: str, project_type: str) -> dict:
        return self.ok(self.session.post("/projects/all", params={"user_id": self.user_id},
                                         json={"title": title, "description": "", "type": project_type}), 200, 201)

    def upload_model(self, project_id: int, models: Path, project_type: str) -> dict:
        model, labels = ("light_dark.h5", "classLabel.txt") if project_type == "Classification" else ("detector.zip", "detector_labels.txt")
        files = [("files", (model, (models / model).read_bytes())), ("files", (labels, (models / labels).read_bytes()))]
        return self.ok(self.session.post("/models/all", params=self.scope(project_id, method="upload"), files=files,
                                         data={"title": "sample", "description": "", "type": project_type}, timeout=300), 200, 201)

    def served(self, model_id: int) -> dict:
        deadline = time.monotonic() + 120
        while (model := self.ok(self.session.get(f"/models/{model_id}")))["status"] != "Trained":
            assert time.monotonic() < deadline, f"model {model_id} was never served: {model}"
            time.sleep(0.5)
        return model

    def upload_video(self, project_id: int, model_id: int, video: Path, interval: int) -> dict:
        files = {"file": ("clip.mp4", video.read_bytes(), "video/mp4")}
        return self.ok(self.session.post("/videos/all", params=self.scope(project_id), data={"model_id": str(model_id), "interval": str(interval)},
                                         files=files, timeout=120), 200, 202)

    def processed(self, video_id: int) -> dict:
        """`GET /videos/<id>` (the video page) until the video is done."""
        deadline = time.monotonic() + PROCESSING_TIMEOUT_S
        while (answer := self.ok(self.session.get(f"/videos/{video_id}")))["video"]["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, f"video {video_id} still {answer['video']['status']}"
            time.sleep(0.3)
        assert answer["video"]["status"] == "done", answer["video"]
        return answer

    def deleted(self, path: str) -> None:
        assert self.ok(self.session.delete(path)) == {"message": "success"}
        gone = self.session.get(path)
        assert gone.status_code == 404 and gone.json()["code"] == "not_found", gone.text


def sign_up_and_log_in(session) -> int:
    """The UI's sign-up and login; it keeps the token in a cookie and never sends it."""
    name = f"ui-{uuid.uuid4().hex[:8]}"
    created = session.post("/users/", json={"username": name, "password": "correct horse battery staple", "email": f"{name}@example.com"})
    assert created.status_code in (200, 201), created.text
    login = session.post("/users/auth/", json={"username": name, "password": "correct horse battery staple", "remember": True})
    assert login.status_code == 200 and login.json()["token"], login.text
    return int(login.json()["user_id"])


def test_the_original_ui_works_end_to_end_in_legacy_mode(legacy_stack, api, media):
    session = api(legacy_stack)  # no token, ever
    ui = UI(session, sign_up_and_log_in(session))

    # the project list, a new project, its page, its description
    assert ui.ok(session.get("/projects/all", params={"user_id": ui.user_id})) == []
    project = ui.new_project("pets", "Classification")
    page = ui.ok(session.get(f"/projects/{project['id']}"))
    assert (page["title"], page["type"], page["user"]) == ("pets", "Classification", ui.user_id)
    described = ui.ok(session.put(f"/projects/{project['id']}", params={"description": "My second project"}))
    assert described["message"] == "success" and described["description"] == "My second project"
    assert [p["id"] for p in ui.ok(session.get("/projects/all", params={"user_id": ui.user_id}))] == [project["id"]]

    # images: upload into collections, move one, rename a collection, delete one (distinct bytes: a
    # repeat would be stored once)
    cats = ui.ok(session.post("/images/Cat", params=ui.scope(project["id"]), files=[("files", (f"c{i}.png", png(255 - i))) for i in range(7)]), 201)
    dogs = ui.ok(session.post("/images/Dog", params=ui.scope(project["id"]), files=[("files", (f"d{i}.png", png(i))) for i in range(6)]), 201)
    assert [image["type"] for image in cats + dogs] == ["cat"] * 7 + ["dog"] * 6
    summary = ui.ok(session.get("/images/type", params=ui.scope(project["id"])))
    assert [(row["name"], row["count"]) for row in summary] == [("cat", 7), ("dog", 6)] and summary[0]["avatarImage"]["url"]
    one = ui.ok(session.get(f"/images/{cats[0]['id']}"))
    assert (one["type"], one["project"]) == ("cat", project["id"]) and session.get(one["url"]).content == png(255)
    moved = ui.ok(session.put(f"/images/{cats[0]['id']}", params={"type": "dog"}))
    assert moved["type"] == "dog"
    renamed = ui.ok(session.put("/images/Dog", params=ui.scope(project["id"], type="Puppy")))
    assert sorted(image["id"] for image in renamed) == sorted([cats[0]["id"]] + [image["id"] for image in dogs])
    ui.deleted(f"/images/{cats[1]['id']}")
    summary = ui.ok(session.get("/images/type", params=ui.scope(project["id"])))
    assert [(row["name"], row["count"]) for row in summary] == [("cat", 5), ("puppy", 7)]

    # models: upload one, start a training, open them, delete the training
    model = ui.served(ui.upload_model(project["id"], media["models"], "Classification")["id"])
    assert (model["type"], model["labels"]) == ("Classification", ["light", "dark"])
    training = session.post("/models/all", params=ui.scope(project["id"], method="create"),
                            data={"title": "mine", "description": "", "type": "Classification", "epochs": "1"})
    assert training.status_code in (200, 201), training.text
    assert (training.json()["message"], training.json()["status"]) == ("success", "Pending")
    listed = ui.ok(session.get("/models/all", params=ui.scope(project["id"])))
    assert {m["id"] for m in listed} >= {model["id"], training.json()["id"]}
    ui.deleted(f"/models/{training.json()['id']}")

    # a video: upload, the list, its page and its frames, then delete it
    video = ui.upload_video(project["id"], model["id"], media["video"], interval=10)["video"]
    assert video["submittedAt"] == video["create_time"] and video["submittedAt"].endswith("Z")
    videos = ui.ok(session.get("/videos/all", params=ui.scope(project["id"])))
    assert [(v["id"], v["submittedAt"]) for v in videos] == [(video["id"], video["submittedAt"])]
    answer = ui.processed(video["id"])
    assert answer["video"]["submittedAt"] == video["submittedAt"] and answer["video"]["title"] == "clip.mp4"
    assert [image["type"] for image in answer["images"]] == ["light"] * 5 + ["dark"] * 5
    for frames in (session.get("/images/byVideo", params={"video_id": video["id"]}), session.get(f"/images/byVideo/{video['id']}")):
        body = ui.ok(frames)
        assert body["type"] == "Classification" and [i["id"] for i in body["date"]] == [i["id"] for i in answer["images"]]
    frame = answer["images"][0]
    assert ui.ok(session.put(f"/images/{frame['id']}", params={"type": "bright"}))["type"] == "bright"
    ui.deleted(f"/videos/{video['id']}")
    assert ui.session.get(f"/images/{frame['id']}").status_code == 404  # its frames went with it

    # the model, then the project and everything in it
    ui.deleted(f"/models/{model['id']}")
    ui.deleted(f"/projects/{project['id']}")
    assert ui.ok(session.get("/projects/all", params={"user_id": ui.user_id})) == []
    # Its images go in the background, after the delete answered.
    eventually(lambda: session.get(f"/images/{cats[2]['id']}").status_code == 404, "the project's images deleted with it")


def test_detection_frames_are_typed_detected_with_their_boxes_in_legacy_mode(legacy_stack, api, media):
    session = api(legacy_stack)
    ui = UI(session, sign_up_and_log_in(session))
    project = ui.new_project("bottles", "Detection")
    model = ui.served(ui.upload_model(project["id"], media["models"], "Detection")["id"])
    video = ui.upload_video(project["id"], model["id"], media["video"], interval=25)["video"]
    answer = ui.processed(video["id"])
    light, dark = answer["images"][0], answer["images"][-1]
    assert [image["type"] for image in answer["images"]] == ["detected"] * 4
    best = light["detections"][0]
    assert best["label"] == "bottle" and best["score"] > 0.9 and light["score"] == best["score"]
    assert light["captions"] == f",bottle {best['score']:.3f}" and light["boxes"].startswith(",[")
    assert (dark["detections"], dark["captions"], dark["boxes"]) == ([], "", "")
    body = ui.ok(session.get("/images/byVideo", params={"video_id": video["id"]}))
    assert body["type"] == "Detection" and [(i["type"], i["boxes"]) for i in body["date"]] == [(i["type"], i["boxes"]) for i in answer["images"]]
    predicted = ui.ok(session.post("/images/predict", params=ui.scope(project["id"]), data={"model_id": str(model["id"])},
                                   files=[("files", ("white.png", png(255, (200, 100))))]), 200, 201)
    assert predicted[0]["type"] == "detected" and predicted[0]["captions"] == ",bottle 1.000"
    summary = ui.ok(session.get("/images/type", params=ui.scope(project["id"])))
    assert [(row["name"], row["count"]) for row in summary] == [("detected", 5)]
    ui.deleted(f"/projects/{project['id']}")


def test_legacy_mode_still_checks_a_user_id_or_a_token_that_is_sent(legacy_stack, api, register):
    owner_id, _ = register(legacy_stack, f"ui-owner-{uuid.uuid4().hex[:6]}")
    other_id, other_token = register(legacy_stack, f"ui-other-{uuid.uuid4().hex[:6]}")
    ui = UI(api(legacy_stack), owner_id)
    project = ui.new_project("mine", "Classification")
    (image,) = ui.ok(ui.session.post("/images/cat", params=ui.scope(project["id"]), files=[("files", ("a.png", png(255)))]), 201)
    with_token = api(legacy_stack, other_token)
    for path in (f"/projects/{project['id']}", f"/images/{image['id']}"):
        assert ui.session.get(path, params={"user_id": other_id}).status_code == 404
        assert with_token.get(path).status_code == 404
        assert with_token.delete(path).status_code == 404
        assert with_token.get(path, params={"user_id": owner_id}).status_code == 403
    assert ui.session.get("/projects/all").status_code == 400  # a list still names its user
    assert ui.ok(ui.session.get(f"/images/{image['id']}"))["type"] == "cat"  # nothing was deleted
    ui.deleted(f"/projects/{project['id']}")


def test_with_authentication_on_the_same_calls_need_the_owners_token(stack, api, register, media):
    owner_id, owner_token = register(stack, f"ui-auth-{uuid.uuid4().hex[:6]}")
    _, other_token = register(stack, f"ui-auth-other-{uuid.uuid4().hex[:6]}")
    ui = UI(api(stack, owner_token), owner_id)
    project = ui.new_project("mine", "Classification")
    described = ui.ok(ui.session.put(f"/projects/{project['id']}", params={"description": "changed"}))
    assert described["message"] == "success"
    (image,) = ui.ok(ui.session.post("/images/cat", params=ui.scope(project["id"]), files=[("files", ("a.png", png(255)))]), 201)
    model = ui.served(ui.upload_model(project["id"], media["models"], "Classification")["id"])
    video = ui.upload_video(project["id"], model["id"], media["video"], interval=50)["video"]
    assert video["submittedAt"] == video["create_time"]
    ui.processed(video["id"])

    paths = [f"/projects/{project['id']}", f"/images/{image['id']}", f"/videos/{video['id']}", f"/models/{model['id']}",
             f"/images/byVideo/{video['id']}"]
    anonymous, other = api(stack), api(stack, other_token)
    for path in paths:
        assert anonymous.get(path).status_code == 401, path
        assert other.get(path).status_code == 404, path
        assert other.get(path, params={"user_id": owner_id}).status_code == 403, path
        assert ui.session.get(path).status_code == 200, path
    for path in paths[:4]:
        assert other.delete(path).status_code == 404, path
    assert ui.session.get("/images/byVideo", params={"video_id": video["id"]}).json()["type"] == "Classification"
    assert other.put(f"/images/{image['id']}", params={"type": "dog"}).status_code == 404
    ui.deleted(f"/projects/{project['id']}")
