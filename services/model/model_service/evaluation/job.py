"""The `evaluate_model` job: a model's predictions on images whose labels are known, the report
(metrics.py) and the chart (chart.py).

A job's payload names the model, the user it runs for (the model must still be readable by them,
the project theirs), the project whose images are used, and, for the evaluation that ends a
training, the held-out image ids and the training's per-epoch metrics (its curves). Images come
from the image service over gRPC: their labels from ListImages, their bytes from StreamDataset,
predicted in batches as they stream (memory stays bounded by one batch). Progress is images
predicted of images to predict. The report is the job's result; the chart is kept in object
storage under the model's files (deleted with it).

No half-written state: each run names its chart afresh (`chart_key`) and records the name in the
job's checkpoint before writing it, so a run that is cancelled, loses its job (deleted with its
project) or dies leaves no chart that no evaluation points to: it removes its own, or the
job's cleanup does; and two runs of one job never write the same object.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from mlstudio.common import errors, jobs, mongo
from mlstudio.common.vocabulary import CLASSIFICATION, DETECTION

from ..detections import DEFAULT_THRESHOLD
from . import chart, metrics

log = logging.getLogger(__name__)

EVALUATE_JOB = "evaluate_model"
BATCH = 32
# Detection mAP is computed over every prediction down to this score (COCO's practice: a
# ranking needs the low-scoring boxes too); precision and recall use the model's threshold.
MIN_DETECTION_SCORE = 0.01


def job_id(model_id: int, project_id: int | None) -> str:
    """The evaluation at the end of the model's training (`project_id` None), or on a project."""
    return f"evaluation-{model_id}-training" if project_id is None else f"evaluation-{model_id}-project-{project_id}"


def chart_key(model_id: int, project_id: int | None) -> str:
    """A new object-storage key for a chart of this evaluation (one per run)."""
    scope = "training" if project_id is None else f"project-{project_id}"
    return f"models/{model_id}/evaluations/{scope}-{uuid.uuid4().hex[:12]}.png"


def chart_keys(job: jobs.Job) -> set[str]:
    """The charts a job's runs may have written: the finished one's and the last run's."""
    return {key for key in (job.result.get("chart_key"), job.checkpoint.get("chart_key")) if key}


def evaluation_payload(model_id: int, user_id: int, project_id: int, *, held_out: list[int] | None = None,
                       history: list[dict] | None = None, training: bool = False) -> dict:
    return {"model_id": model_id, "user_id": user_id, "project_id": project_id, "training": training,
            "held_out": held_out, "history": history or []}


def evaluable(image, model_type: str) -> bool:
    """Whether an image's label can judge a model: checked (a person's, or a model's that scored
    at least its project's review threshold: `is_train`), and a tag for classification, boxes for
    detection. A label waiting for review could be the very mistake being measured."""
    return image.is_train and (bool(image.detections) if model_type == DETECTION else bool(image.tag))


def curves(history: Iterable[dict]) -> dict:
    """Per-epoch metrics (`[{epoch, name: value, ...}]`, as a training reported them) as
    `{epochs: [...], metrics: {name: [value or None per epoch]}}`; the last report of an epoch wins."""
    by_epoch: dict[int, dict] = {}
    for entry in history:
        by_epoch[int(entry["epoch"])] = {name: value for name, value in entry.items() if name != "epoch"}
    epochs = sorted(by_epoch)
    names = sorted({name for values in by_epoch.values() for name in values})
    return {"epochs": epochs, "metrics": {name: [by_epoch[epoch].get(name) for epoch in epochs] for name in names}}


class EvaluateModelHandler:
    """Runs `evaluate_model` jobs with the model service's core (its rules of who may use which
    model, and its predictions through TF Serving)."""

    def __init__(self, core, images, store, batch: int = BATCH):
        self.core = core
        self.images = images
        self.store = store
        self.batch = batch

    def run(self, job: jobs.Job, context: jobs.JobContext) -> dict:
        payload = job.payload
        model_id, user_id, project_id = int(payload["model_id"]), int(payload["user_id"]), int(payload["project_id"])
        doc = self.core.repository.get(model_id)
        if doc is None:
            raise jobs.JobCancelled(f"model {model_id} was deleted")
        labelled = self._labelled(doc, user_id, project_id, payload.get("held_out"))
        if not labelled:
            raise jobs.JobFailed(no_images_message(doc["type"], held_out=payload.get("held_out") is not None))
        context.report(0, len(labelled))
        truths, predictions = [], []
        for ids, contents in self._batches(user_id, project_id, labelled):
            found = self._predict(doc, user_id, contents)
            for image_id, predicted in zip(ids, found, strict=True):
                truths.append(labelled[image_id])
                predictions.append(predicted)
            context.report(len(truths), len(labelled))
        if not truths:
            raise jobs.JobFailed("the images to evaluate on were deleted meanwhile")
        report = self._report(doc, truths, predictions)
        training_curves = curves(payload.get("history") or []) if payload.get("training") else None
        key = self._store_chart(context, doc, chart.render(report, training_curves), len(truths))
        log.info("model %s evaluated on %s images", model_id, len(truths), extra={"job": job.id})
        return {"report": report, "curves": training_curves, "chart_key": key, "evaluated_at": mongo.iso(mongo.utc_now())}

    def cleanup(self, job: jobs.Job) -> None:
        """A failed or cancelled evaluation keeps no chart (the job holds no report either)."""
        for key in chart_keys(job):
            self.store.delete(key)

    def _store_chart(self, context: jobs.JobContext, doc: dict, png: bytes, done: int) -> str:
        """Writes the chart under a new key, recorded first in the job's checkpoint; removes it
        again when the job or the model went away meanwhile."""
        payload = context.job.payload
        previous = context.job.checkpoint.get("chart_key")
        key = chart_key(doc["_id"], None if payload.get("training") else int(payload["project_id"]))
        context.report(done, done, checkpoint={"chart_key": key})
        if previous:
            self.store.delete(previous)  # an earlier run's, which died before finishing
        self.store.put_bytes(key, png, "image/png")
        try:
            context.report(done, done, checkpoint={"chart_key": key})  # still ours: the job was not cancelled nor deleted
            if self.core.repository.get(doc["_id"]) is None:
                raise jobs.JobCancelled(f"model {doc['_id']} was deleted")
        except (jobs.JobCancelled, jobs.LeaseLost):
            self.store.delete(key)
            raise
        return key

    # ----- the steps

    def _labelled(self, doc: dict, user_id: int, project_id: int, held_out: list[int] | None) -> dict:
        """Image id -> its true label (classification) or true boxes (detection)."""
        wanted = None if held_out is None else {int(image_id) for image_id in held_out}
        try:
            listed = self.images.list_images(project_id, user_id)
        except errors.NotFound:
            raise jobs.JobFailed(f"project {project_id} is gone") from None
        labelled = {}
        for image in listed:
            if (wanted is not None and image.id not in wanted) or not evaluable(image, doc["type"]):
                continue
            if doc["type"] == DETECTION:
                labelled[image.id] = [metrics.Box(box.label, box.x1, box.y1, box.x2, box.y2) for box in image.detections]
            else:
                labelled[image.id] = image.tag
        return labelled

    def _batches(self, user_id: int, project_id: int, labelled: dict):
        """(ids, contents) of the labelled images, `batch` at a time, as the dataset streams."""
        ids, contents = [], []
        try:
            for item in self.images.stream_dataset(project_id, user_id):
                if item.image_id not in labelled:
                    continue
                ids.append(item.image_id)
                contents.append(item.content)
                if len(ids) == self.batch:
                    yield ids, contents
                    ids, contents = [], []
        except errors.NotFound:
            raise jobs.JobFailed(f"project {project_id} is gone") from None
        if ids:
            yield ids, contents

    def _predict(self, doc: dict, user_id: int, contents: list[bytes]) -> list:
        if doc["type"] == DETECTION:
            found = self.core.detect(doc["_id"], user_id, contents, threshold=MIN_DETECTION_SCORE)
            return [[metrics.Box(box.label, box.x1, box.y1, box.x2, box.y2, box.score) for box in boxes] for boxes in found]
        return [result.label for result in self.core.classify(doc["_id"], user_id, contents)]

    def _report(self, doc: dict, truths: list, predictions: list) -> dict:
        if doc["type"] == DETECTION:
            threshold = doc.get("threshold") or DEFAULT_THRESHOLD
            return {"type": DETECTION, **metrics.detection_report(truths, predictions, threshold)}
        return {"type": CLASSIFICATION, **metrics.classification_report(truths, predictions)}


def no_images_message(model_type: str, *, held_out: bool = False) -> str:
    if held_out:
        return "none of the images held out of the training is left in the project"
    if model_type == DETECTION:
        return "the project has no images with boxes to evaluate a Detection model on"
    return "the project has no tagged images to evaluate a Classification model on"
