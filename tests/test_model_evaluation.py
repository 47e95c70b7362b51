"""Evaluating models through the gateway, against the real stack (image service over gRPC, TF
Serving, the trainer): a trained model's evaluation on its held-out images (per-tag precision and
recall, confusion matrix, curves, a chart that opens without a token), an uploaded classifier and
an uploaded detector evaluated on a project's images as a background job, and refused requests."""
from __future__ import annotations

import io
import time
import uuid

import numpy as np
import pytest
import requests
from PIL import Image

from model_service import sample_models

pytestmark = pytest.mark.integration

TIMEOUT_S = 420
RED, BLUE = (210, 40, 40), (40, 40, 210)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    sample_models.write_samples(directory)
    return directory


def colour_png(rgb, seed: int) -> bytes:
    noise = np.random.default_rng(seed).integers(-25, 26, (48, 64, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def grey_png(value: int, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, "PNG")
    return out.getvalue()


class User:
    def __init__(self, stack, api, register):
        self.user_id, token = register(stack, f"evaluator-{uuid.uuid4().hex[:8]}")
        self.session = api(stack, token)

    def project(self, project_type="Classification", **tagged: list[bytes]) -> int:
        created = self.session.post("/projects/all", params={"user_id": self.user_id},
                                    json={"title": "evaluation", "description": "", "type": project_type})
        assert created.status_code in (200, 201), created.text
        project_id = created.json()["id"]
        for tag, contents in tagged.items():
            files = [("files", (f"{tag}{i}.png", content)) for i, content in enumerate(contents)]
            uploaded = self.session.post(f"/images/{tag}", params=self.params(project_id), files=files)
            assert uploaded.status_code in (200, 201), uploaded.text
        return project_id

    def params(self, project_id, **extra) -> dict:
        return {"user_id": self.user_id, "project_id": project_id, **extra}

    def upload(self, project_id, model: tuple[str, bytes], labels: bytes) -> dict:
        response = self.session.post("/models/all", params=self.params(project_id, method="upload"), data={"title": "uploaded"},
                                     files=[("files", model), ("files", ("labels.txt", labels))])
        assert response.status_code in (200, 201), response.text
        return response.json()

    def evaluation(self, model_id, project_id=None):
        return self.session.get(f"/models/{model_id}/evaluation", params={"project_id": project_id} if project_id else None)

    def evaluate(self, model_id, project_id):
        return self.session.post(f"/models/{model_id}/evaluate", params={"project_id": project_id})

    def wait(self, read, until, what: str) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            response = read()
            body = response.json()
            if response.status_code == 200 and until(body):
                return body
            assert time.monotonic() < deadline, f"{what} not done after {TIMEOUT_S} s: {response.status_code} {body}"
            time.sleep(0.3)


def finished(evaluation: dict) -> bool:
    return evaluation["status"] in ("Done", "Failed")


def assert_chart_opens_without_a_token(evaluation: dict) -> None:
    chart = requests.get(evaluation["chart_url"], timeout=30)
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png", chart.text[:300]
    assert Image.open(io.BytesIO(chart.content)).format == "PNG"


@pytest.fixture
def owner(stack, api, register):
    return User(stack, api, register)


def test_a_trained_model_is_evaluated_on_its_held_out_images(stack, api, register, owner):
    project_id = owner.project(red=[colour_png(RED, i) for i in range(12)], blue=[colour_png(BLUE, i) for i in range(12)])
    created = owner.session.post("/models/all", params=owner.params(project_id, method="create"),
                                 data={"title": "colours", "recipe": "scratch", "epochs": "10"})
    assert created.status_code == 201, created.text
    model_id = created.json()["id"]
    model = owner.wait(lambda: owner.session.get(f"/models/{model_id}"), lambda m: m["status"] in ("Trained", "Failed"), "training")
    assert model["status"] == "Trained", model
    evaluation = owner.wait(lambda: owner.evaluation(model_id), finished, "the held-out evaluation")
    assert evaluation["status"] == "Done", evaluation
    assert (evaluation["scope"], evaluation["project"], evaluation["type"]) == ("held_out", project_id, "Classification")
    held_out = model["training"]["held_out"]["images"]
    assert evaluation["images"] == len(held_out) == 4  # 20 % of each tag's 12
    assert evaluation["accuracy"] == pytest.approx(model["training"]["held_out"]["accuracy"])
    classes = {row["label"]: row for row in evaluation["classes"]}
    assert set(classes) == {"blue", "red"} and all(row["support"] == 2 for row in classes.values())
    assert all(0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 for row in classes.values())
    matrix = evaluation["confusion_matrix"]
    assert matrix["labels"] == ["blue", "red"] and sum(map(sum, matrix["matrix"])) == 4
    curves = evaluation["curves"]
    assert curves["epochs"] == list(range(1, int(model["metrics"]["epochs_run"]) + 1))
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(curves["metrics"])
    assert_chart_opens_without_a_token(evaluation)
    stranger = User(stack, api, register)
    refused = stranger.evaluation(model_id)
    assert refused.status_code == 404 and refused.json()["message"] == f"model {model_id} not found"


def test_an_uploaded_classifier_is_evaluated_on_a_project_in_the_background(owner, samples):
    # the sample model says "light" for bright images: one bright image tagged dark is its one mistake
    project_id = owner.project(light=[grey_png(255), grey_png(240), grey_png(220)], dark=[grey_png(0), grey_png(20), grey_png(250)])
    model = owner.upload(project_id, ("model.h5", (samples / "light_dark.h5").read_bytes()), b"{'light': 0, 'dark': 1}\n")
    none_yet = owner.evaluation(model["id"], project_id)
    assert none_yet.status_code == 404 and none_yet.json()["code"] == "no_evaluation"
    queued = owner.evaluate(model["id"], project_id)
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] in ("Pending", "Running") and queued.json()["progress"]["total"] == 6
    evaluation = owner.wait(lambda: owner.evaluation(model["id"], project_id), finished, "the evaluation")
    assert evaluation["status"] == "Done" and evaluation["progress"] == {"done": 6, "total": 6}, evaluation
    assert evaluation["accuracy"] == pytest.approx(5 / 6) and evaluation["scope"] == "project"
    assert evaluation["confusion_matrix"] == {"labels": ["dark", "light"], "matrix": [[2, 1], [0, 3]]}
    classes = {row["label"]: row for row in evaluation["classes"]}
    assert classes["light"]["precision"] == pytest.approx(0.75) and classes["dark"]["recall"] == pytest.approx(2 / 3)
    assert evaluation["curves"] is None
    assert_chart_opens_without_a_token(evaluation)


def test_an_uploaded_detector_gets_average_precision_on_a_projects_boxes(owner, samples):
    project_id = owner.project("Detection")
    detector = owner.upload(project_id, ("detector.zip", (samples / "detector.zip").read_bytes()), sample_models.DETECTOR_LABELS.encode())
    # the detector's own predictions file the images with their boxes: judged by them, it is perfect
    predicted = owner.session.post("/images/predict", params=owner.params(project_id), data={"model_id": str(detector["id"])},
                                   files=[("files", ("white.png", grey_png(255, (200, 100)))), ("files", ("black.png", grey_png(0, (200, 100))))])
    assert predicted.status_code in (200, 201), predicted.text
    assert owner.evaluate(detector["id"], project_id).status_code == 202
    evaluation = owner.wait(lambda: owner.evaluation(detector["id"], project_id), finished, "the detection evaluation")
    assert evaluation["status"] == "Done" and evaluation["type"] == "Detection", evaluation
    assert evaluation["images"] == 1  # the black image has no boxes
    bottle = next(row for row in evaluation["classes"] if row["label"] == "bottle")
    assert bottle == {"label": "bottle", "precision": 1.0, "recall": 1.0, "ap50": pytest.approx(1.0), "ap": pytest.approx(1.0), "support": 1}
    assert evaluation["map50"] == pytest.approx(1.0) and evaluation["map"] == pytest.approx(1.0)
    assert_chart_opens_without_a_token(evaluation)


def test_bad_evaluation_requests_get_4xx_with_a_message(stack, api, register, owner, samples):
    project_id = owner.project(light=[grey_png(255)])
    model = owner.upload(project_id, ("model.h5", (samples / "light_dark.h5").read_bytes()), b"{'light': 0, 'dark': 1}\n")
    stranger = User(stack, api, register)
    strangers_project = stranger.project(light=[grey_png(255)])
    cases = [
        (stranger.evaluate(model["id"], strangers_project), 404, f"model {model['id']} not found"),  # a private model of another user
        (owner.evaluate(model["id"], strangers_project), 404, f"project {strangers_project} not found"),
        (owner.evaluate(model["id"], owner.project("Detection")), 400, "is a Classification model and project"),
        (owner.evaluate(model["id"], owner.project()), 400, "the project has no tagged images"),
        (owner.evaluate(model["id"], owner.project(cat=[grey_png(9)])), 400, "none of the project's tags ('cat') is a label"),
        (owner.session.post(f"/models/{model['id']}/evaluate"), 400, "query parameter project_id is required"),
        (owner.evaluation(model["id"]), 404, "was not trained here"),
    ]
    for response, status, message in cases:
        assert response.status_code == status and message in response.json()["message"], (status, message, response.text)
        assert set(response.json()) == {"message", "code"}
