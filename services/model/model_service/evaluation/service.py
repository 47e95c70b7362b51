"""Evaluations on the model service's side: what may be evaluated on which project, queuing the
job, and the evaluation as callers read it (`GET /models/<id>/evaluation`).

An evaluation is its job (`evaluation_jobs`, the shared `mlstudio.common.jobs` queue): queued ->
`Pending`, running -> `Running` with `progress` `{done, total}` (images predicted), done ->
`Done` with the report and a signed URL of its chart, failed or cancelled -> `Failed` with
`error`. One evaluation is kept per model and project (and one for the model's training, on its
held-out images); asking again replaces a finished one. The jobs run in the model service
itself (`worker`): they are predictions through TF Serving, not training.
"""
from __future__ import annotations

from mlstudio.common import errors, jobs
from mlstudio.common.media_files import MediaFile
from mlstudio.common.vocabulary import CLASSIFICATION, TRAINED

from ..user_messages import without_paths
from .job import EVALUATE_JOB, EvaluateModelHandler, chart_keys, evaluable, evaluation_payload, job_id, no_images_message

PENDING, RUNNING, DONE, FAILED = "Pending", "Running", "Done", "Failed"  # an evaluation's, not a model's
EVALUATION_STATUSES = (PENDING, RUNNING, DONE, FAILED)
_STATUS = {jobs.QUEUED: PENDING, jobs.RUNNING: RUNNING, jobs.DONE: DONE, jobs.FAILED: FAILED, jobs.CANCELLED: FAILED}
MAX_LISTED_TAGS = 5


def chart_path(model_id: int, project_id: int | None) -> str:
    """The signed route of an evaluation's chart."""
    return f"/models/{model_id}/evaluation/file" if project_id is None else f"/models/{model_id}/evaluation/{project_id}/file"


class Evaluations:
    def __init__(self, queue: jobs.JobQueue, images, store, signer):
        self.queue = queue
        self.images = images
        self.store = store
        self.signer = signer

    def worker(self, core, owner: str, poll_s: float = 1.0) -> jobs.Worker:
        """The worker that runs evaluation jobs with `core` (run it in a thread: `run_forever`)."""
        return jobs.Worker(self.queue, {EVALUATE_JOB: EvaluateModelHandler(core, self.images, self.store)}, owner, poll_s=poll_s)

    # ----- starting

    def start(self, doc: dict, user_id: int, project_id: int, project_type: str) -> dict:
        """Queues the evaluation of the model `doc` on the project's labelled images (the one in
        progress, if any, is answered instead); 4xx when it cannot be evaluated there."""
        model_id = doc["_id"]
        if doc["status"] != TRAINED:
            raise errors.NotAcceptable(f"model {model_id} is not ready (status {doc['status']}): only a Trained model can be evaluated",
                                       code="model_not_ready")
        if doc["type"] != project_type:
            raise errors.InvalidArgument(f"model {model_id} is a {doc['type']} model and project {project_id} is a {project_type} "
                                         f"project: evaluate it on a {doc['type']} project", code="wrong_project_type")
        labelled = [image for image in self.images.list_images(project_id, user_id) if evaluable(image, doc["type"])]
        if not labelled:
            raise errors.InvalidArgument(no_images_message(doc["type"]), code="no_images")
        if doc["type"] == CLASSIFICATION:
            self._check_common_labels(doc, {image.tag for image in labelled})
        key = job_id(model_id, project_id)
        current = self.queue.get(key)
        if current is not None and not current.finished:
            return self.present(current, model_id, project_id)
        if current is not None:
            self._remove(current)  # a new evaluation replaces the finished one
        payload = evaluation_payload(model_id, user_id, project_id)
        return self.present(self.queue.enqueue(key, EVALUATE_JOB, payload, total=len(labelled)), model_id, project_id)

    @staticmethod
    def _check_common_labels(doc: dict, tags: set[str]) -> None:
        if tags & set(doc.get("labels") or []):
            return
        listed = ", ".join(repr(tag) for tag in sorted(tags)[:MAX_LISTED_TAGS]) + (", ..." if len(tags) > MAX_LISTED_TAGS else "")
        raise errors.InvalidArgument(f"none of the project's tags ({listed}) is a label of model {doc['_id']}: "
                                     "its predictions could never be right", code="no_common_labels")

    def after_training(self, doc: dict, history: list[dict]) -> jobs.Job | None:
        """Queues the evaluation of a model just trained on its held-out images, with the
        training's per-epoch metrics (its curves); nothing when none was held out. Queuing it
        again (a trainer that died after registering) changes nothing."""
        held_out = ((doc.get("training") or {}).get("held_out") or {}).get("images") or []
        if not held_out:
            return None
        payload = evaluation_payload(doc["_id"], doc["user"], doc["project"], held_out=[int(i) for i in held_out],
                                     history=history, training=True)
        return self.queue.enqueue(job_id(doc["_id"], None), EVALUATE_JOB, payload, total=len(held_out))

    # ----- reading

    def get(self, doc: dict, project_id: int | None) -> dict:
        """The evaluation of the model's training (`project_id` None) or on the project."""
        job = self.queue.get(job_id(doc["_id"], project_id))
        if job is not None:
            return self.present(job, doc["_id"], project_id)
        if project_id is not None:
            raise errors.NotFound(f"model {doc['_id']} has not been evaluated on project {project_id}: "
                                  f"POST /models/{doc['_id']}/evaluate?project_id={project_id} evaluates it", code="no_evaluation")
        if doc.get("source") != "training":
            raise errors.NotFound(f"model {doc['_id']} was not trained here, so it has no training evaluation: "
                                  f"POST /models/{doc['_id']}/evaluate?project_id=<project> evaluates it on a project's images",
                                  code="no_evaluation")
        if doc["status"] != TRAINED:
            raise errors.NotFound(f"model {doc['_id']} has no evaluation yet: its training has not finished (status {doc['status']})",
                                  code="no_evaluation")
        raise errors.NotFound(f"model {doc['_id']} has no training evaluation: no images were held out of its training "
                              "(validation_split=0); evaluate it on a project instead", code="no_evaluation")

    def present(self, job: jobs.Job, model_id: int, project_id: int | None) -> dict:
        """The API's Evaluation: its state, and once done its report, curves and chart URL."""
        status = _STATUS[job.status]
        result = job.result if status == DONE else {}
        return {
            "model": model_id,
            "project": int(job.payload.get("project_id", 0)) if project_id is None else project_id,
            "scope": "held_out" if project_id is None else "project",
            "status": status,
            "error": (without_paths(job.error) or None) if status == FAILED else None,
            "progress": {"done": int(job.progress.get("done", 0)), "total": int(job.progress.get("total", 0))},
            "evaluated_at": result.get("evaluated_at"),
            **(result.get("report") or {}),
            "curves": result.get("curves"),
            "chart_url": self.signer.url(chart_path(model_id, project_id)) if result.get("chart_key") else None,
        }

    def chart(self, model_id: int, project_id: int | None) -> MediaFile:
        """The chart of a finished evaluation (the caller has checked the URL's signature)."""
        job = self.queue.get(job_id(model_id, project_id))
        if job is None or job.status != jobs.DONE or not job.result.get("chart_key"):
            raise errors.NotFound(f"model {model_id} has no evaluation chart here")
        key = job.result["chart_key"]
        info = self.store.stat(key)
        return MediaFile(key, "image/png", info.size, info.etag, self.signer.ttl_s)

    # ----- forgetting

    def forget_model(self, model_id: int) -> None:
        """Removes the model's evaluations and their charts."""
        for key in self.queue.find_ids(f"^evaluation-{model_id}-"):
            self._forget(key)

    def forget_project(self, project_id: int) -> None:
        """Removes every evaluation on the project and their charts (of any model: built-in and
        public models keep their other files)."""
        for key in self.queue.find_ids(f"^evaluation-[0-9]+-project-{project_id}$"):
            self._forget(key)

    def _forget(self, key: str) -> None:
        job = self.queue.get(key)
        if job is not None:
            self._remove(job)

    def _remove(self, job: jobs.Job) -> None:
        """The job, then its charts; a run still going notices its job is gone and removes its own."""
        self.queue.delete(job.id)
        for chart in chart_keys(job):
            self.store.delete(chart)
