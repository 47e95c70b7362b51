"""The built-in pretrained models through the gateway, on the real local stack: listed in every
project of their type, undeletable, and a Detection project that works end to end with no
upload: a street video becomes frames whose detections name COCO classes, boxes in pixels, in
the structured and the original string forms; `threshold` filters what is kept."""
from __future__ import annotations

import io
import re
import uuid

import cv2
import pytest
from PIL import Image

from test_videos import PROCESSING_TIMEOUT_S, shared_data_dir

pytestmark = pytest.mark.integration

COCO = "COCO objects (NanoDet-m)"
IMAGENET = "ImageNet (EfficientNet-Lite0)"


class Person:
    def __init__(self, stack, api, register):
        self.user_id, token = register(stack, f"builtin-{uuid.uuid4().hex[:8]}")
        self.session = api(stack, token)

    def project(self, project_type: str) -> int:
        created = self.session.post("/projects/all", params={"user_id": self.user_id},
                                    json={"title": "built-in", "description": "", "type": project_type})
        assert created.status_code in (200, 201), created.text
        return created.json()["id"]

    def models(self, project_id: int) -> list[dict]:
        response = self.session.get("/models/all", params={"user_id": self.user_id, "project_id": project_id})
        assert response.status_code == 200, response.text
        return response.json()

    def builtin(self, project_id: int, title: str) -> dict:
        (model,) = [m for m in self.models(project_id) if m["title"] == title and m["builtin"]]
        return model


@pytest.fixture
def person(stack, api, register):
    return Person(stack, api, register)


def frame_of(video: str, index: int) -> tuple[bytes, tuple[int, int]]:
    capture = cv2.VideoCapture(str(shared_data_dir() / video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    assert ok
    picture = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=92)
    return out.getvalue(), picture.size


def assert_in_pixels_and_both_forms(image: dict, width: int, height: int) -> None:
    found = image["detections"]
    for detection in found:
        x1, y1, x2, y2 = detection["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, detection
    assert image["captions"] == "".join(f",{d['label']} {d['score']:.3f}" for d in found)
    assert len(re.findall(r",\[\d+ \d+ \d+ \d+\]", image["boxes"] or "")) == len(found)


def test_every_project_lists_the_builtin_of_its_type_and_nobody_deletes_it(person):
    detection, classification = person.project("Detection"), person.project("Classification")
    coco = person.builtin(detection, COCO)
    imagenet = person.builtin(classification, IMAGENET)
    assert (coco["type"], coco["status"], coco["isPublic"], coco["user"], coco["threshold"]) == ("Detection", "Trained", True, 0, 0.4)
    assert coco["labels"][:3] == ["person", "bicycle", "car"] and len(coco["labels"]) == 80
    assert (imagenet["type"], imagenet["status"], len(imagenet["labels"])) == ("Classification", "Trained", 1000)
    assert [m["title"] for m in person.models(detection) if m["builtin"]] == [COCO]
    refused = person.session.delete(f"/models/{coco['id']}")
    assert refused.status_code == 403 and refused.json()["message"] == f"model {coco['id']} is built into the studio: it cannot be deleted"
    assert person.session.get(f"/models/{coco['id']}").json()["status"] == "Trained"


def test_a_street_video_in_a_new_detection_project_gives_cars_with_boxes(person):
    project = person.project("Detection")
    coco = person.builtin(project, COCO)
    with open(shared_data_dir() / "car-detection.mp4", "rb") as video:
        response = person.session.post("/videos/all", params={"user_id": person.user_id, "project_id": project},
                                       data={"model_id": str(coco["id"]), "interval": "4", "wait": "true"},
                                       files={"file": ("car-detection.mp4", video, "video/mp4")}, timeout=PROCESSING_TIMEOUT_S + 60)
    assert response.status_code in (200, 201), response.text
    answer = response.json()
    assert answer["video"]["status"] == "done", answer["video"]
    images = answer["images"]
    width, height = answer["video"]["width"], answer["video"]["height"]
    assert len(images) == answer["video"]["progress"]["total"] > 0
    labels = {d["label"] for image in images for d in image["detections"]}
    assert "car" in labels and labels <= set(coco["labels"])
    assert all(d["score"] >= 0.4 for image in images for d in image["detections"])
    for image in images:
        assert_in_pixels_and_both_forms(image, width, height)
    with_car = [image for image in images if image["detections"] and image["detections"][0]["label"] == "car"]
    assert with_car and all(image["type"] == "detected" for image in images)  # DETECTION_FILING's default


def test_bottles_in_the_bottle_video_and_a_request_threshold(person):
    project = person.project("Detection")
    coco = person.builtin(project, COCO)
    params = {"user_id": person.user_id, "project_id": project}
    with open(shared_data_dir() / "bottle-detection.mp4", "rb") as video:
        response = person.session.post("/videos/all", params=params, files={"file": ("bottle-detection.mp4", video, "video/mp4")},
                                       data={"model_id": str(coco["id"]), "interval": "40", "threshold": "0.3", "wait": "true"},
                                       timeout=PROCESSING_TIMEOUT_S + 60)
    answer = response.json()
    assert answer["video"]["status"] == "done", answer["video"]
    found = [d for image in answer["images"] for d in image["detections"]]
    assert "bottle" in {d["label"] for d in found} and min(d["score"] for d in found) >= 0.3

    frame, (width, height) = frame_of("bottle-detection.mp4", 600)

    def predict(threshold: str) -> dict:
        # each threshold in a project of its own: the same bytes twice in one project are stored (and predicted) once
        fresh = {"user_id": person.user_id, "project_id": person.project("Detection")}
        reply = person.session.post("/images/predict", params=fresh, data={"model_id": str(coco["id"]), "threshold": threshold},
                                    files=[("files", ("frame.jpg", frame))])
        assert reply.status_code == 201, reply.text
        (image,) = reply.json()
        assert_in_pixels_and_both_forms(image, width, height)
        return image

    low, high = predict("0.1"), predict("0.6")
    assert low["detections"] and min(d["score"] for d in low["detections"]) >= 0.1
    assert [d for d in low["detections"] if d["score"] >= 0.6] == high["detections"]
    # without a threshold of its own, a prediction takes its project's
    by_project = person.project("Detection")
    assert person.session.put(f"/projects/{by_project}", params={"threshold": "0.1"}).json()["threshold"] == 0.1
    reply = person.session.post("/images/predict", params={"user_id": person.user_id, "project_id": by_project},
                                data={"model_id": str(coco["id"])}, files=[("files", ("frame.jpg", frame))])
    assert reply.status_code == 201 and reply.json()[0]["detections"] == low["detections"]
    bad = person.session.post("/images/predict", params=params, data={"model_id": str(coco["id"]), "threshold": "high"},
                              files=[("files", ("frame.jpg", frame))])
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_threshold"
