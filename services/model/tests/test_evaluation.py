"""Evaluation of models: the metrics (against hand-computed values), the chart, the evaluation job
with the core's fakes (conftest's `world`, an image service and a job queue), and the REST routes:
what may be evaluated where, the JSON while it runs and once done, the signed chart, forgetting."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import types

import pytest
from PIL import Image

from mlstudio.common import errors, jobs, settings as settings_mod
from model_service.app import create_app
from model_service.evaluation import chart, metrics
from model_service.evaluation.job import EvaluateModelHandler, curves
from model_service.evaluation.service import Evaluations
from model_service.settings import ModelSettings
from model_service.uploads import Upload

Box = metrics.Box


# ----- classification metrics

def test_classification_metrics_are_those_of_scikit_learn_with_zero_division_0():
    report = metrics.classification_report(["a", "a", "b", "b", "b"], ["a", "b", "b", "b", "c"])
    assert report["images"] == 5 and report["accuracy"] == pytest.approx(0.6)
    assert report["confusion_matrix"] == {"labels": ["a", "b", "c"], "matrix": [[1, 1, 0], [0, 2, 1], [0, 0, 0]]}
    rows = {row["label"]: row for row in report["classes"]}
    assert rows["a"] == {"label": "a", "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert rows["b"] == {"label": "b", "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3),
                         "support": 3}
    # predicted but never true: no support, precision 0 (never right), left out of the averages
    assert rows["c"] == {"label": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["macro_avg"] == {"precision": pytest.approx(5 / 6), "recall": pytest.approx(7 / 12), "f1": pytest.approx(2 / 3)}
    assert report["weighted_avg"] == {"precision": pytest.approx(0.8), "recall": pytest.approx(0.6), "f1": pytest.approx(2 / 3)}


def test_a_class_never_predicted_has_precision_0_not_an_error():
    report = metrics.classification_report(["a", "b"], ["a", "a"])
    rows = {row["label"]: row for row in report["classes"]}
    assert rows["b"] == {"label": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rows["a"]["precision"] == 0.5 and rows["a"]["recall"] == 1.0


def test_classification_metrics_of_nothing_and_of_unequal_inputs():
    assert metrics.classification_report([], [])["accuracy"] == 0.0
    with pytest.raises(ValueError):
        metrics.classification_report(["a"], [])


# ----- detection metrics (pycocotools)

def test_detection_metrics_per_class_with_pycocotools():
    truths = [[Box("car", 10, 10, 50, 50)], [Box("car", 0, 0, 20, 20), Box("dog", 30, 30, 60, 60)], []]
    predictions = [[Box("car", 10, 10, 50, 50, score=0.9)],
                   [Box("car", 0, 0, 20, 20, score=0.3), Box("dog", 100, 100, 120, 120, score=0.8)],
                   [Box("cat", 0, 0, 5, 5, score=0.9)]]
    report = metrics.detection_report(truths, predictions, threshold=0.5)
    rows = {row["label"]: row for row in report["classes"]}
    # both cars found and ranked above any false car: AP 1; only one scores above the threshold
    assert rows["car"] == {"label": "car", "precision": 1.0, "recall": 0.5, "ap50": 1.0, "ap": 1.0, "support": 2}
    assert rows["dog"] == {"label": "dog", "precision": 0.0, "recall": 0.0, "ap50": 0.0, "ap": 0.0, "support": 1}
    assert rows["cat"] == {"label": "cat", "precision": 0.0, "recall": None, "ap50": None, "ap": None, "support": 0}
    assert report["map50"] == 0.5 and report["map"] == 0.5 and report["images"] == 3 and report["threshold"] == 0.5


def test_a_loose_box_counts_at_iou_0_5_but_not_at_stricter_ious():
    truth = [[Box("car", 0, 0, 100, 100)]]
    loose = [[Box("car", 0, 0, 100, 58, score=0.9)]]  # IoU 0.58
    report = metrics.detection_report(truth, loose, threshold=0.5)
    row = report["classes"][0]
    assert row["ap50"] == pytest.approx(1.0) and row["precision"] == 1.0 and row["recall"] == 1.0
    assert row["ap"] == pytest.approx(0.2)  # matched at IoU 0.5 and 0.55 of the ten thresholds 0.5..0.95


def test_detection_metrics_without_boxes():
    assert metrics.detection_report([[]], [[]], 0.5) == {"images": 1, "threshold": 0.5, "classes": [], "map50": None, "map": None}


# ----- curves and chart

def test_curves_by_epoch_the_last_report_of_an_epoch_wins():
    history = [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5, "val_loss": 0.7}, {"epoch": 2, "loss": 0.4, "val_loss": 0.6}]
    assert curves(history) == {"epochs": [1, 2], "metrics": {"loss": [1.0, 0.4], "val_loss": [None, 0.6]}}


def is_png(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def test_the_chart_is_a_png_with_the_curves_beside_the_matrix():
    report = metrics.classification_report(["a", "b"] * 3, ["a", "a"] * 3)
    alone = is_png(chart.render(report))
    with_curves = is_png(chart.render(report, {"epochs": [1, 2], "metrics": {"accuracy": [0.5, 0.9], "loss": [1.0, None]}}))
    assert with_curves[0] > alone[0] and with_curves[1] == alone[1]
    many = metrics.classification_report([f"class {i}" for i in range(60)], [f"class {i}" for i in range(60)])
    is_png(chart.render(many))
    is_png(chart.render(metrics.detection_report([[Box("car", 0, 0, 9, 9)]], [[Box("car", 0, 0, 9, 9, score=0.9)]], 0.5)))


# ----- the job and the routes, with fakes

class FakeJobQueue:
    """The job queue over a dict; `run_all` plays the worker."""

    def __init__(self):
        self.jobs: dict[str, jobs.Job] = {}

    def enqueue(self, job_id, kind, payload, *, total=0):
        self.jobs.setdefault(job_id, jobs.Job(id=job_id, kind=kind, payload=json.loads(json.dumps(payload)), status=jobs.QUEUED,
                                              attempts=0, max_attempts=3, owner=None, lease_expires=None,
                                              progress={"done": 0, "total": total}, checkpoint={}, error="", result={},
                                              cancel_requested=False))
        return self.jobs[job_id]

    def get(self, job_id):
        return self.jobs.get(job_id)

    def delete(self, job_id):
        self.jobs.pop(job_id, None)

    def find_ids(self, pattern):
        return sorted(key for key in self.jobs if re.search(pattern, key))

    def set(self, job_id, **changes):
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], **changes)


class FakeContext:
    def __init__(self, queue, job):
        self.queue, self.job = queue, job

    def report(self, done, total, checkpoint=None, details=None):
        if self.job.id not in self.queue.jobs:
            raise jobs.LeaseLost(f"job {self.job.id} is gone")
        changes = {"status": jobs.RUNNING, "progress": {"done": done, "total": total}}
        if checkpoint is not None:
            changes["checkpoint"] = dict(checkpoint)
        self.queue.set(self.job.id, **changes)
        self.job = self.queue.jobs[self.job.id]

    def check(self):
        pass


def png(value, size=(40, 30)):
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, "PNG")
    return out.getvalue()


class FakeImages:
    """Projects' images: (id, tag, detections, bytes, checked)."""

    def __init__(self):
        self.images: dict[int, list] = {}
        self.streamed = 0

    def add(self, project_id, image_id, content, tag="", boxes=(), checked=True):
        detections = [types.SimpleNamespace(label=label, score=0.0, x1=x1, y1=y1, x2=x2, y2=y2) for label, x1, y1, x2, y2 in boxes]
        self.images.setdefault(project_id, []).append(
            types.SimpleNamespace(id=image_id, tag=tag, detections=detections, content=content, is_train=checked))

    def list_images(self, project_id, user_id):
        return list(self.images.get(project_id, []))

    def stream_dataset(self, project_id, user_id):
        for image in self.images.get(project_id, []):
            self.streamed += 1
            yield types.SimpleNamespace(image_id=image.id, tag=image.tag, content=image.content, content_type="image/png")


H5_BYTES = b"\x89HDF\r\n\x1a\n" + b"\0" * 100


def upload(world, labels=b"{'light': 0, 'dark': 1}", user=1, project=10, **fields):
    fields.setdefault("title", "light or dark")
    files = [Upload("model.h5", io.BytesIO(H5_BYTES)), Upload("classLabel.txt", io.BytesIO(labels))]
    return world.core.create(user, project, "upload", fields, files)


@pytest.fixture
def lab(world):
    """The core with evaluations: project 10 has 3 light and 3 dark images, one of them tagged wrong."""
    world.queue = FakeJobQueue()
    world.images = FakeImages()
    world.core.evaluations = Evaluations(world.queue, world.images, world.store, world.signer)
    for image_id, (tag, value) in enumerate([("light", 220), ("light", 230), ("light", 20), ("dark", 30), ("dark", 10), ("dark", 25)], 1):
        world.images.add(10, image_id, png(value), tag)
    world.images.add(10, 7, png(200))  # untagged: not evaluated on

    def run_all():
        handler = EvaluateModelHandler(world.core, world.images, world.store, batch=4)
        for key, job in list(world.queue.jobs.items()):
            if job.status != jobs.QUEUED:
                continue
            try:
                result = handler.run(job, FakeContext(world.queue, job))
            except (jobs.JobFailed, errors.DomainError) as exc:
                world.queue.set(key, status=jobs.FAILED, error=exc.message)
            else:
                world.queue.set(key, status=jobs.DONE, result=json.loads(json.dumps(result)))

    world.run_all = run_all
    return world


def test_evaluating_an_uploaded_model_on_a_project(lab):
    model = upload(lab)
    queued = lab.core.evaluate(model["id"], 1, 10)
    assert queued == {"model": model["id"], "project": 10, "scope": "project", "status": "Pending", "error": None,
                      "progress": {"done": 0, "total": 6}, "evaluated_at": None, "curves": None, "chart_url": None}
    assert lab.core.evaluate(model["id"], 1, 10)["status"] == "Pending"  # one evaluation at a time per model and project
    lab.run_all()
    done = lab.core.evaluation(model["id"], 1, 10)
    assert done["status"] == "Done" and done["progress"] == {"done": 6, "total": 6} and done["type"] == "Classification"
    assert done["images"] == 6 and done["accuracy"] == pytest.approx(5 / 6)
    assert done["confusion_matrix"] == {"labels": ["dark", "light"], "matrix": [[3, 0], [1, 2]]}
    rows = {row["label"]: row for row in done["classes"]}
    assert rows["light"]["precision"] == 1.0 and rows["light"]["recall"] == pytest.approx(2 / 3) and rows["dark"]["support"] == 3
    assert done["chart_url"].startswith(f"http://gateway.test/models/{model['id']}/evaluation/10/file?expires=")
    [chart_key] = charts(lab, model["id"])
    assert chart_key.startswith(f"models/{model['id']}/evaluations/project-10-") and is_png(lab.store.get_bytes(chart_key))
    assert [call[2] for call in lab.tfserving.predict_calls] == [4, 2]  # batched as the images stream
    again = lab.core.evaluate(model["id"], 1, 10)  # a finished evaluation is replaced by a new one
    assert again["status"] == "Pending" and again["chart_url"] is None and charts(lab, model["id"]) == []
    lab.run_all()
    assert len(charts(lab, model["id"])) == 1


def test_labels_waiting_for_review_do_not_judge_a_model(lab):
    model = upload(lab)
    lab.images.add(10, 999, png(200), tag="dark", checked=False)  # a model's guess, not yet reviewed
    assert lab.core.evaluate(model["id"], 1, 10)["progress"]["total"] == 6  # the project's six checked images


def charts(lab, model_id) -> list[str]:
    return [key for key in lab.store.list_keys(f"models/{model_id}/") if "/evaluations/" in key]


@pytest.mark.parametrize("user, project, error, code", [
    (2, 20, errors.NotFound, None),  # another user's private model
    (1, 20, errors.NotFound, None),  # another user's project
    (1, 11, errors.InvalidArgument, "wrong_project_type"),
    (1, 12, errors.InvalidArgument, "no_images"),
    (1, 13, errors.InvalidArgument, "no_common_labels"),
    (1, None, errors.InvalidArgument, None),
])
def test_bad_evaluation_requests_are_refused_saying_why(lab, user, project, error, code):
    lab.projects.projects.update({12: (1, "Classification"), 13: (1, "Classification")})
    lab.images.add(12, 50, png(9))  # no tag
    lab.images.add(13, 51, png(9), "cat")
    model = upload(lab)
    with pytest.raises(error) as raised:
        lab.core.evaluate(model["id"], user, project)
    if code:
        assert raised.value.code == code
    assert "/" not in raised.value.message.split(":")[0] and lab.queue.jobs == {}


def test_a_public_model_of_another_user_can_be_evaluated_on_your_project(lab):
    lab.projects.projects[21] = (2, "Classification")
    lab.images.add(21, 60, png(240), "light")
    model = upload(lab, isPublic="true")
    lab.core.evaluate(model["id"], 2, 21)
    lab.run_all()
    assert lab.core.evaluation(model["id"], 2, 21)["accuracy"] == 1.0
    with pytest.raises(errors.NotFound):  # the owner does not see the other user's project's evaluation
        lab.core.evaluation(model["id"], 1, 21)


def test_no_evaluation_yet_is_a_404_saying_how_to_make_one(lab):
    model = upload(lab)
    with pytest.raises(errors.NotFound, match=r"POST /models/1/evaluate\?project_id=10") as raised:
        lab.core.evaluation(model["id"], 1, 10)
    assert raised.value.code == "no_evaluation"
    with pytest.raises(errors.NotFound, match="was not trained here"):
        lab.core.evaluation(model["id"], 1)


def test_the_evaluation_of_a_training_uses_its_held_out_images_and_curves_and_is_its_owners(lab):
    model = upload(lab)
    lab.repository.update(model["id"], {"source": "training", "training": {"held_out": {"images": [1, 3, 4], "accuracy": 0.6}}})
    lab.core.evaluate_held_out(model["id"], [{"epoch": 1, "loss": 0.9, "accuracy": 0.5}, {"epoch": 2, "loss": 0.4, "accuracy": 0.8}])
    pending = lab.core.evaluation(model["id"], 1)
    assert pending["status"] == "Pending" and pending["scope"] == "held_out" and pending["progress"]["total"] == 3
    lab.run_all()
    done = lab.core.evaluation(model["id"], 1)
    assert done["images"] == 3 and done["accuracy"] == pytest.approx(2 / 3)
    assert done["curves"] == {"epochs": [1, 2], "metrics": {"accuracy": [0.5, 0.8], "loss": [0.9, 0.4]}}
    assert done["chart_url"].startswith(f"http://gateway.test/models/{model['id']}/evaluation/file?expires=")
    lab.repository.update(model["id"], {"isPublic": True})
    with pytest.raises(errors.NotFound):  # a public model's training evaluation stays its owner's
        lab.core.evaluation(model["id"], 2)


def test_a_model_trained_without_held_out_images_says_so(lab):
    model = upload(lab)
    lab.repository.update(model["id"], {"source": "training", "training": {"held_out": {"images": []}}})
    lab.core.evaluate_held_out(model["id"], [])
    with pytest.raises(errors.NotFound, match="validation_split=0"):
        lab.core.evaluation(model["id"], 1)


def test_a_detection_model_gets_average_precision_per_class(lab):
    # the fake detector finds "bottle" at (4, 7.5)-(20, 22.5) of a 40x30 image, scored by brightness,
    # and "can" over the whole image, scored 0.1 (below the threshold)
    lab.images.add(11, 70, png(230), boxes=[("bottle", 4, 7.5, 20, 22.5), ("can", 0, 0, 40, 30)])
    lab.images.add(11, 71, png(230), boxes=[("bottle", 20, 15, 40, 30)])
    lab.images.add(11, 72, png(230))  # no boxes: not evaluated on
    detector = upload(lab, labels=b"bottle\ncan\n", project=11, type="Detection")
    lab.core.evaluate(detector["id"], 1, 11)
    lab.run_all()
    done = lab.core.evaluation(detector["id"], 1, 11)
    assert done["status"] == "Done" and done["type"] == "Detection" and done["images"] == 2 and done["threshold"] == 0.5
    rows = {row["label"]: row for row in done["classes"]}
    assert rows["bottle"] == {"label": "bottle", "precision": 0.5, "recall": 0.5, "ap50": pytest.approx(0.5, abs=0.01),
                              "ap": pytest.approx(0.5, abs=0.01), "support": 2}
    assert rows["can"]["ap50"] == pytest.approx(1.0) and rows["can"]["precision"] is None and rows["can"]["recall"] == 0.0
    assert done["map50"] == pytest.approx(0.75, abs=0.01) and "accuracy" not in done


def test_a_model_deleted_meanwhile_cancels_its_evaluation(lab):
    model = upload(lab)
    lab.core.evaluate(model["id"], 1, 10)
    job = lab.queue.jobs[f"evaluation-{model['id']}-project-10"]
    lab.repository.docs.pop(model["id"])
    with pytest.raises(jobs.JobCancelled):
        EvaluateModelHandler(lab.core, lab.images, lab.store).run(job, FakeContext(lab.queue, job))


def test_deleting_a_model_or_a_project_forgets_their_evaluations_and_charts(lab):
    first, second = upload(lab), upload(lab, isPublic="true")
    lab.core.evaluate(first["id"], 1, 10)
    lab.core.evaluate(second["id"], 1, 10)
    lab.run_all()
    lab.core.delete(first["id"], 1)
    assert lab.queue.find_ids("") == [f"evaluation-{second['id']}-project-10"]
    assert not [key for key in lab.store.list_keys("models/") if key.startswith(f"models/{first['id']}/")]
    lab.repository.docs[second["id"]]["project"] = 99  # a public model of another project, evaluated on project 10
    lab.core.delete_project_data(10)
    assert lab.queue.jobs == {} and charts(lab, second["id"]) == []


class DeletingStore:
    """Object storage during which `on_chart` happens as the chart is written."""

    def __init__(self, store, on_chart):
        self.store, self.on_chart = store, on_chart

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        self.on_chart()
        return self.store.put_bytes(key, data, content_type)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("gone", ["project", "model"])
def test_a_run_whose_project_or_model_is_deleted_meanwhile_leaves_no_chart(lab, gone):
    model = upload(lab)
    lab.core.evaluate(model["id"], 1, 10)
    job = lab.queue.jobs[f"evaluation-{model['id']}-project-10"]
    if gone == "project":
        lab.repository.docs[model["id"]]["project"] = 99  # a model of another project: it stays
        on_chart, raised = lambda: lab.core.delete_project_data(10), jobs.LeaseLost
    else:
        on_chart, raised = lambda: lab.repository.docs.pop(model["id"]), jobs.JobCancelled
    handler = EvaluateModelHandler(lab.core, lab.images, DeletingStore(lab.store, on_chart))
    with pytest.raises(raised):
        handler.run(job, FakeContext(lab.queue, job))
    assert charts(lab, model["id"]) == []


def test_the_cleanup_of_a_run_that_died_removes_its_chart(lab):
    model = upload(lab)
    lab.core.evaluate(model["id"], 1, 10)
    key = f"evaluation-{model['id']}-project-10"
    handler = EvaluateModelHandler(lab.core, lab.images, lab.store)
    handler.run(lab.queue.jobs[key], FakeContext(lab.queue, lab.queue.jobs[key]))  # written, then died before completing
    assert len(charts(lab, model["id"])) == 1
    handler.cleanup(lab.queue.jobs[key])
    assert charts(lab, model["id"]) == []


def as_user(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


def test_rest_routes_and_the_signed_chart(lab):
    settings = settings_mod.load(ModelSettings, {"MONGO_URI": "mongodb://unused", "AUTH_REQUIRED": "true"})
    client = create_app(settings, lab.core).test_client()
    model = upload(lab)
    queued = client.post(f"/models/{model['id']}/evaluate?project_id=10", headers=as_user(1))
    assert queued.status_code == 202 and queued.get_json()["status"] == "Pending"
    missing = client.post(f"/models/{model['id']}/evaluate", headers=as_user(1))
    assert missing.status_code == 400 and "project_id" in missing.get_json()["message"]
    assert client.post(f"/models/{model['id']}/evaluate?project_id=10", headers=as_user(2)).status_code == 404
    none_yet = client.get(f"/models/{model['id']}/evaluation", headers=as_user(1))
    assert none_yet.status_code == 404 and none_yet.get_json()["code"] == "no_evaluation"
    lab.run_all()
    done = client.get(f"/models/{model['id']}/evaluation?project_id=10", headers=as_user(1))
    assert done.status_code == 200 and done.get_json()["confusion_matrix"]["matrix"] == [[3, 0], [1, 2]]
    url = done.get_json()["chart_url"].removeprefix("http://gateway.test")
    image = client.get(url)  # no token: the signature is the permission
    assert image.status_code == 200 and image.mimetype == "image/png" and is_png(image.data)
    assert client.get(url.replace("evaluation/10/", "evaluation/11/")).status_code == 403
    assert client.get(f"/models/{model['id']}/evaluation/10/file").status_code == 403
    spec = client.get("/docs/models/swagger.json").get_json()["paths"]
    assert {"/models/{model_id}/evaluation", "/models/{model_id}/evaluate", "/models/{model_id}/evaluation/file",
            "/models/{model_id}/evaluation/{project_id}/file"} <= set(spec)


def test_without_the_image_service_evaluation_is_not_available(world):
    model = upload(world)
    with pytest.raises(errors.NotImplementedYet):
        world.core.evaluate(model["id"], 1, 10)
