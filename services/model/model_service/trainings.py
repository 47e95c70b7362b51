"""Training on the model service's side (the API process): what `method=create` checks before it
queues a training, the training job's life as the model's owner sees it (status, progress, error),
cancelling, and the training's log. The work itself is the trainer worker's
(`model_service.trainer`, running `model_service.training`).

A trained model is recorded at once (`Pending`) and its training job queued in the service's
database (`training_jobs`, the shared `mlstudio.common.jobs` queue). Until the trainer registers
the model (`Trained`), its status is read from the job: queued -> `Pending`, running ->
`Training` with `progress` `{epoch, epochs, metrics}`, failed -> `Failed` with the job's error,
cancelled -> `Failed` ("the training was cancelled").

The record is written before its job is queued (a job without its record would be taken for a
deleted model's by a quick trainer), so a service that stops in between leaves a record without
a job: the service's reconcile sweep queues it then (`requeue`), or fails it when its uploaded
script was lost with the request.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from mlstudio.common import errors, jobs
from mlstudio.common.vocabulary import FAILED, PENDING, TRAINED, TRAINING

from . import uploads
from .preprocessing import DEFAULT as DEFAULT_PREPROCESSING
from .training import dataset, params as training_params
from .training.job import TRAIN_JOB, job_id, log_key, script_key, training_payload
from .user_messages import without_paths

CANCELLED_ERROR = "the training was cancelled"
# A job is done once the model is registered, so a done job with a record not yet `Trained` is
# only seen between reading the record and reading its job: still training, as far as anyone knows.
_STATUS = {jobs.QUEUED: PENDING, jobs.RUNNING: TRAINING, jobs.DONE: TRAINING, jobs.FAILED: FAILED, jobs.CANCELLED: FAILED}


@dataclass(frozen=True)
class TrainingLimits:
    default_time_limit_s: int = 3600
    max_time_limit_s: int = 21600
    min_images_per_tag: int = 5
    max_script_bytes: int = 1 << 20
    stop_wait_s: float = 10.0  # how long a delete waits for a running training to stop


def progress(job: jobs.Job | None) -> dict | None:
    """`{epoch, epochs, metrics}` of a training job."""
    if job is None:
        return None
    return {"epoch": int(job.progress.get("done", 0)), "epochs": int(job.progress.get("total", 0)),
            "metrics": dict(job.progress.get("metrics") or {})}


def status_and_error(doc: dict, job: jobs.Job | None) -> tuple[str, str | None]:
    """A trained model's status (and error) as its owner sees it: the record's own once it is
    settled (`Trained`, or `Failed` by the service: TF Serving cannot load it, its files were
    lost, its training was never queued), else its job's; without server paths."""
    if doc["status"] in (TRAINED, FAILED) or job is None:
        status, error = doc["status"], doc.get("error")
    elif job.status == jobs.CANCELLED:
        status, error = FAILED, CANCELLED_ERROR
    else:
        status, error = _STATUS[job.status], job.error if job.status == jobs.FAILED else None
    # Errors come from TF Serving, TensorFlow and training scripts too: they may name server files.
    return status, without_paths(error) if error else error


class Trainings:
    def __init__(self, queue: jobs.JobQueue, images, store, limits: TrainingLimits = TrainingLimits()):
        self.queue = queue
        self.images = images
        self.store = store
        self.limits = limits

    # ----- checks before a model is recorded

    def params(self, fields: dict) -> training_params.TrainingParams:
        return training_params.parse(fields, default_time_limit_s=self.limits.default_time_limit_s,
                                     max_time_limit_s=self.limits.max_time_limit_s)

    def read_script(self, files: list[uploads.Upload]) -> bytes | None:
        """The uploaded training script (`files[0]`), or None for the built-in recipe."""
        if len(files) > 1:
            raise errors.InvalidArgument("method=create takes at most one file: files[0], the training script", code="files_required")
        if not files:
            return None
        limit = self.limits.max_script_bytes
        content = files[0].stream.read(limit + 1)
        if len(content) > limit:
            raise errors.PayloadTooLarge(f"the training script is larger than {limit} bytes")
        if not content.strip():
            raise errors.InvalidArgument("the training script is empty")
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.InvalidArgument("the training script must be a Python file in UTF-8", code="bad_training_script") from None
        return content

    def check_dataset(self, project_id: int, user_id: int, include_unchecked: bool = False) -> dict[str, int]:
        """The project's tags and their counts of images a training would use (checked ones,
        unless `include_unchecked`); 400 when they are not enough to train on."""
        tagged = [image for image in self.images.list_images(project_id, user_id) if image.tag]
        counts = Counter(image.tag for image in tagged if include_unchecked or image.is_train)
        try:
            dataset.check_counts(dict(counts), self.limits.min_images_per_tag)
        except dataset.DatasetRefused as exc:
            waiting = len(tagged) - sum(counts.values())
            hint = (f" (only checked images count: {waiting} wait for review; confirm them, or train with "
                    "include_unchecked=true)") if waiting else ""
            raise errors.InvalidArgument(f"{exc}{hint}", code="not_enough_images") from None
        return dict(counts)

    # ----- the job

    def start(self, model_id: int, user_id: int, project_id: int, params: training_params.TrainingParams,
              script: bytes | None, preprocessing: str) -> jobs.Job:
        """Keeps the script and queues the training."""
        if script is not None:
            self.store.put_bytes(script_key(model_id), script, "text/x-python; charset=utf-8")
        return self._enqueue(model_id, user_id, project_id, params, script is not None, preprocessing)

    def _enqueue(self, model_id: int, user_id: int, project_id: int, params: training_params.TrainingParams,
                 has_script: bool, preprocessing: str) -> jobs.Job:
        payload = training_payload(model_id, user_id, project_id, params, has_script, preprocessing)
        # An upsert keyed by the model: queuing twice (a request and the sweep) makes one job.
        return self.queue.enqueue(job_id(model_id), TRAIN_JOB, payload, total=params.epochs)

    def requeue(self, doc: dict) -> jobs.Job | None:
        """Queues the training of a model recorded without its job, as `start` would have; None
        when it cannot be: its uploaded script was never kept."""
        training = doc.get("training") or {}
        has_script = bool(training.get("script"))
        if has_script and not self._script_kept(doc["_id"]):
            return None
        params = training_params.TrainingParams.from_dict(training.get("params") or {})
        return self._enqueue(doc["_id"], doc["user"], doc["project"], params, has_script, doc.get("preprocessing", DEFAULT_PREPROCESSING))

    def _script_kept(self, model_id: int) -> bool:
        try:
            self.store.stat(script_key(model_id))
        except errors.NotFound:
            return False
        return True

    def job(self, model_id: int) -> jobs.Job | None:
        return self.queue.get(job_id(model_id))

    def jobs_of(self, docs: Iterable[dict]) -> dict[int, jobs.Job]:
        """The training jobs of the trained models among `docs`, by model id."""
        ids = {job_id(doc["_id"]): doc["_id"] for doc in docs if doc.get("source") == "training"}
        return {ids[key]: job for key, job in self.queue.get_many(ids).items()}

    def cancel(self, model_id: int) -> jobs.Job:
        """Asks the training to stop; 406 when it is not queued or running."""
        job = self.queue.get(job_id(model_id))
        if job is None or job.finished:
            raise errors.NotAcceptable(f"model {model_id} is not being trained", code="not_training")
        return self.queue.cancel(job_id(model_id)) or job

    def stop(self, model_id: int) -> None:
        """Before the model is deleted: cancels its training, waits a little for the trainer to
        let go, and forgets the job. A trainer that is still busy finds the model gone and stops."""
        key = job_id(model_id)
        if self.queue.cancel(key) is None:
            return
        deadline = time.monotonic() + self.limits.stop_wait_s
        while self.queue.is_active(key) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.queue.delete(key)

    def log(self, model_id: int) -> str:
        """The training's output so far ("" before the trainer started)."""
        try:
            return self.store.get_bytes(log_key(model_id)).decode("utf-8", errors="replace")
        except errors.NotFound:
            return ""
