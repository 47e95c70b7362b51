"""The trainer's handler of `train_model` jobs: the project's images into a dataset, the training
in the sandbox, and the trained model registered as uploaded models are (exported, served).

A job's payload names the model (already recorded, `Pending`), its owner and project, the
training parameters and, for an uploaded script, its object-storage key. Progress (epoch of
epochs, latest metrics) goes into the job, which is what the model's `status` and `progress`
are read from; the training's output is kept (bounded) in object storage for `GET
/models/<id>/logs`, saved every few seconds while it runs.

Restart-safety: once a training has produced its model, the model is kept in object storage and
its key written to the job's checkpoint before registration starts, so a trainer that dies while
registering (or a TF Serving that is down) does not make the next attempt train again.
Registration itself may be repeated: it writes the same version of the same model.

Evaluation: the trainer keeps every epoch's metrics (the checkpoint's `history`, at most
MAX_HISTORY epochs) and, once the model is registered, asks the model service's core to evaluate
it on its held-out images with them (`evaluation/`); asking again after a retry changes nothing.

Work directories: a job's files (dataset copy, script, sandbox) live in `work_root/<job id>`,
removed when the attempt ends. A trainer killed mid-job cannot remove its own: the next attempt
at the job starts by clearing the directory of that name, and `sweep_work_root` (at trainer
start and periodically) removes those of jobs no live trainer holds.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlstudio.common import errors, jobs
from mlstudio.common.vocabulary import TRAINED

from . import dataset as datasets
from . import features, recipe, split
from .params import TrainingParams
from .sandbox import Confinement, Limits, LogTail, Outcome, Sandbox, Training

log = logging.getLogger(__name__)

TRAIN_JOB = "train_model"
LOG_SAVE_PERIOD_S = 3.0
CANCEL_LOOK_S = 2.0
_METRIC_NAME = re.compile(r"[^\w\-]")
MAX_HISTORY = 1000  # epochs of metrics kept for the curves (epochs are at most 500)
REMOVE_ATTEMPTS = 5


def job_id(model_id: int) -> str:
    return f"model-{model_id}"


def log_key(model_id: int) -> str:
    """Object-storage key of a training's output (deleted with the model's other files)."""
    return f"models/{model_id}/training.log"


def script_key(model_id: int) -> str:
    return f"models/{model_id}/train.py"


def trained_key(model_id: int, name: str) -> str:
    return f"models/{model_id}/trained/{name}"


def training_payload(model_id: int, user_id: int, project_id: int, params: TrainingParams, has_script: bool, preprocessing: str) -> dict:
    """What a training job carries."""
    return {"model_id": model_id, "user_id": user_id, "project_id": project_id, "params": params.to_dict(),
            "script_key": script_key(model_id) if has_script else None, "preprocessing": preprocessing}


def clean_metrics(metrics: dict) -> dict[str, float]:
    """Metric names safe as database field names, values plain floats."""
    return {_METRIC_NAME.sub("_", str(name))[:64]: float(value) for name, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


class Registrar(Protocol):
    """The model service's core, as training needs it."""

    def training_model(self, model_id: int) -> dict | None:
        """The model record being trained, or None when it is gone (deleted)."""

    def register_trained(self, model_id: int, model_file: Path, labels: list[str], metrics: dict,
                         training: dict | None = None) -> dict:
        """Exports, stores and serves a trained model as uploads are; the model, `Trained`, with
        `training` (what the training did: held-out images and accuracy, time) in its record.
        NotFound when the model was deleted meanwhile."""

    def abandon_training(self, model_id: int) -> None:
        """Removes what a training that will not finish left (served copy, trained files)."""

    def evaluate_held_out(self, model_id: int, history: list[dict]) -> None:
        """Queues the evaluation of the trained model on its held-out images, with the
        training's per-epoch metrics (`[{epoch, name: value}]`); idempotent."""


class Images(Protocol):
    def stream_dataset(self, project_id: int, user_id: int, *, include_unchecked: bool = False): ...


@dataclass(frozen=True)
class TrainerConfig:
    """The trainer's settings for each job."""

    work_root: Path
    limits: Limits
    confinement: Confinement
    max_time_limit_s: int
    cpu_limit_s: int  # 0: the job's time limit times the CPU count
    min_images_per_tag: int
    max_dataset_bytes: int
    # The transfer-learning backbone every training may read (EfficientNet-Lite0's features.keras),
    # None where this server has none; and where its features of each image are kept.
    backbone: features.Backbone | None = None
    feature_cache: Path | None = None


class TrainModelHandler:
    def __init__(self, registrar: Registrar, images: Images, store, config: TrainerConfig,
                 sandbox_factory: Callable[[Limits, Confinement], Sandbox] = Sandbox):
        self.registrar = registrar
        self.images = images
        self.store = store
        self.config = config
        self.sandbox_factory = sandbox_factory
        self._current: str | None = None  # the job in progress here: never swept

    # ----- jobs.JobHandler

    def run(self, job: jobs.Job, context: jobs.JobContext) -> dict:
        payload = job.payload
        model_id = int(payload["model_id"])
        model = self.registrar.training_model(model_id)
        if model is None:
            raise jobs.JobCancelled(f"model {model_id} was deleted")
        if model.get("status") == TRAINED:  # registered by an attempt that died just after
            self.registrar.evaluate_held_out(model_id, job.checkpoint.get("history") or [])
            return {"metrics": model.get("metrics") or {}}
        with self._job_dir(job) as job_dir:
            checkpoint = job.checkpoint
            if checkpoint.get("model_key"):
                model_file = job_dir / checkpoint["model_name"]
                self.store.download_to(checkpoint["model_key"], model_file)
            else:
                checkpoint, model_file = self._train(job, context, job_dir)
            context.check()
            try:
                registered = self.registrar.register_trained(model_id, model_file, checkpoint["labels"], checkpoint["metrics"],
                                                             training=checkpoint.get("training"))
            except errors.NotFound:
                raise jobs.JobCancelled(f"model {model_id} was deleted") from None
            except errors.Unavailable:
                raise  # TF Serving or storage away: retried later, from the kept model
            except errors.DomainError as exc:
                raise jobs.JobFailed(f"the trained model cannot be served: {exc.message}") from None
        self.registrar.evaluate_held_out(model_id, checkpoint.get("history") or [])
        return {"metrics": registered.get("metrics") or checkpoint["metrics"]}

    def cleanup(self, job: jobs.Job) -> None:
        self.registrar.abandon_training(int(job.payload["model_id"]))
        remove_tree(self.config.work_root / job.id)

    def sweep_work_root(self, is_active: Callable[[str], bool]) -> list[str]:
        """Removes the work directories that no attempt in progress owns: left by a trainer that
        was killed (its job retried elsewhere, finished or given up). `is_active(job_id)`: a live
        trainer holds that job (this one's current job included). The names removed."""
        removed = []
        try:
            entries = sorted(os.scandir(self.config.work_root), key=lambda entry: entry.name)
        except FileNotFoundError:
            return removed
        for entry in entries:
            if entry.name == self._current or is_active(entry.name):
                continue
            remove_tree(Path(entry.path))
            removed.append(entry.name)
        if removed:
            log.info("removed the work directories of jobs no trainer runs", extra={"jobs": removed})
        return removed

    # ----- the steps

    def _train(self, job: jobs.Job, context: jobs.JobContext, job_dir: Path) -> tuple[dict, Path]:
        """Dataset, script, sandbox; the trained model's checkpoint (the model kept in storage)
        and file."""
        payload = job.payload
        model_id = int(payload["model_id"])
        workdir = job_dir / "work"
        workdir.mkdir()
        params = TrainingParams.from_dict(payload.get("params") or {})
        data = self._materialise(payload, workdir / "data", params.include_unchecked)
        context.check()
        script, trusted = self._script(payload, workdir)
        limits = self._limits(params)
        files = {tag: sorted(f"{tag}/{path.name}" for path in (data.data_dir / tag).iterdir()) for tag in data.labels}
        held_out = sorted(split.held_out(files, params.validation_split, params.seed))
        run_params = {**params.to_dict(), "time_limit_s": int(limits.wall_s), "labels": data.labels, "held_out": held_out}
        readable: tuple[str, ...] = ()
        backbone = self.config.backbone
        if backbone is not None:
            run_params["backbone"] = str(backbone.model_file)
            readable = (str(backbone.model_file.parent),)
            if trusted and self.config.feature_cache is not None:
                run_params["feature_cache"] = features.CACHE_DIR_NAME
                features.copy_in(self.config.feature_cache / backbone.version, data.data_dir, workdir / features.CACHE_DIR_NAME)
        started = time.monotonic()
        history: list[dict] = []
        outcome = self._run_sandboxed(model_id, Training(workdir, script, run_params, trusted, readable), limits, context, history)
        elapsed = time.monotonic() - started
        if not outcome.ok:
            raise jobs.JobFailed(outcome.error or "the training failed")
        if trusted and backbone is not None and self.config.feature_cache is not None:
            features.take_new(workdir / "output" / features.OUTPUT_DIR_NAME, self.config.feature_cache / backbone.version)
        model_file = _as_model_file(outcome.model, job_dir)
        metrics = clean_metrics(outcome.metrics)
        record = {"recipe": params.recipe if trusted else "script", "time_s": round(elapsed, 3),
                  "held_out": {"images": [int(Path(name).stem) for name in held_out],
                               "accuracy": metrics.get("held_out_accuracy", metrics.get("val_accuracy"))}}
        checkpoint = {"model_key": trained_key(model_id, model_file.name), "model_name": model_file.name,
                      "labels": data.labels, "metrics": metrics, "training": record, "history": history}
        with open(model_file, "rb") as stream:
            self.store.put_stream(checkpoint["model_key"], stream)
        progress = context.job.progress
        context.report(int(progress.get("done", 0)), int(progress.get("total", params.epochs)),
                       checkpoint=checkpoint, details={"metrics": checkpoint["metrics"]})
        return checkpoint, model_file

    def _run_sandboxed(self, model_id: int, training: Training, limits: Limits, context: jobs.JobContext,
                       history: list[dict] | None = None) -> Outcome:
        """The run, its progress into the job (and each epoch's metrics into `history`), its
        output into storage; stops when the job must."""
        log_tail = LogTail(self.config.limits.log_bytes)
        saver = _LogSaver(self.store, log_key(model_id), log_tail)
        last_look = time.monotonic()

        def on_progress(epoch: int, epochs: int, metrics: dict) -> None:
            cleaned = clean_metrics(metrics)
            if history is not None and len(history) < MAX_HISTORY:
                history.append({**cleaned, "epoch": int(epoch)})
            context.report(epoch, epochs, details={"metrics": cleaned})
            saver.save_if_due()

        def check() -> None:
            nonlocal last_look
            if time.monotonic() - last_look >= CANCEL_LOOK_S:  # a cancel is seen in seconds, not at the next epoch
                last_look = time.monotonic()
                context.heartbeat()
            context.check()
            saver.save_if_due()

        try:
            outcome = self.sandbox_factory(limits, self.config.confinement).run(training, log_tail, on_progress, check)
        except BaseException:
            saver.save()
            raise
        saver.save(header=outcome.isolation)
        log.info("training %s ended: %s", model_id, outcome.reason, extra={"isolation": list(outcome.isolation)})
        return outcome

    def _materialise(self, payload: dict, data_dir: Path, include_unchecked: bool) -> datasets.Dataset:
        """The project's checked images (all of them with `include_unchecked`) as class folders."""
        items = self.images.stream_dataset(int(payload["project_id"]), int(payload["user_id"]),
                                           include_unchecked=include_unchecked)
        try:
            data = datasets.materialise(items, data_dir, min_images_per_tag=self.config.min_images_per_tag,
                                        max_bytes=self.config.max_dataset_bytes)
        except datasets.DatasetRefused as exc:
            raise jobs.JobFailed(str(exc)) from None
        except errors.NotFound:
            raise jobs.JobFailed("the project is gone") from None
        _share_read_only(data_dir)
        return data

    def _script(self, payload: dict, workdir: Path) -> tuple[Path, bool]:
        """The script to run and whether it is trusted (the built-in recipe)."""
        script = workdir / "train.py"
        if payload.get("script_key"):
            self.store.download_to(payload["script_key"], script)
            trusted = False
        else:
            shutil.copyfile(recipe.__file__, script)
            trusted = True
        os.chmod(script, 0o644)
        return script, trusted

    def _limits(self, params: TrainingParams) -> Limits:
        wall = max(1, min(int(params.time_limit_s), self.config.max_time_limit_s))
        cpu = self.config.cpu_limit_s or wall * (os.cpu_count() or 1)
        return dataclasses.replace(self.config.limits, wall_s=float(wall), cpu_s=float(max(cpu, 1)))

    def _job_dir(self, job: jobs.Job):
        return _JobDir(self, job.id)


class _JobDir:
    """A fresh directory for one attempt, named after its job (so the next attempt, or a sweep,
    finds what a killed trainer left), not listable by the sandbox's user, removed afterwards
    whatever happens."""

    def __init__(self, handler: TrainModelHandler, job_id: str):
        self.handler = handler
        self.root = handler.config.work_root
        self.job_id = job_id
        self.path = self.root / job_id

    def __enter__(self) -> Path:
        self.handler._current = self.job_id
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        remove_tree(self.path)  # what an attempt whose trainer was killed left
        self.path.mkdir(mode=0o711)
        os.chmod(self.path, 0o711)
        return self.path

    def __exit__(self, *exc_info) -> None:
        remove_tree(self.path)
        self.handler._current = None


class _LogSaver:
    """Keeps the training's output in object storage: every few seconds while it changes, and at the end."""

    def __init__(self, store, key: str, tail: LogTail):
        self.store = store
        self.key = key
        self.tail = tail
        self._last = 0.0

    def save_if_due(self) -> None:
        if self.tail.changed.is_set() and time.monotonic() - self._last >= LOG_SAVE_PERIOD_S:
            self.save()

    def save(self, header: tuple[str, ...] = ()) -> None:
        self.tail.changed.clear()
        self._last = time.monotonic()
        text = "".join(f"[sandbox] {line}\n" for line in header) + self.tail.text()
        try:
            self.store.put_bytes(self.key, text.encode(), "text/plain; charset=utf-8")
        except errors.DomainError as exc:
            log.warning("training log %s not saved: %s", self.key, exc.message)


def remove_tree(path: Path) -> None:
    """Removes `path` and all under it, whatever a training made there. `rm -rf`, not
    shutil.rmtree: Python 3.11's recurses, and fails (RecursionError, even with ignore_errors)
    under folders nested about a thousand deep, which a script makes in a fraction of a second.
    Never crosses into another filesystem.

    A SIGTERM to the trainer's process group asks the trainer to stop after its job; it must not
    kill the removal that ends the job (leaving the dataset copy behind): `rm` runs in a session of
    its own, and is run again if a signal still reached it before it left the group (the child
    takes default signal handling before it calls setsid)."""
    for _ in range(REMOVE_ATTEMPTS):
        done = subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, start_new_session=True)
        if done.returncode >= 0:
            return


def _share_read_only(data_dir: Path) -> None:
    """The dataset readable (not writable) by the sandbox's user, whatever the umask."""
    for folder, subfolders, files in os.walk(data_dir):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)


def _as_model_file(model: Path, job_dir: Path) -> Path:
    """The trained model as one file: a SavedModel directory is zipped, as uploads are."""
    if model.is_file():
        return model
    packed = job_dir / "model.zip"
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(model.rglob("*")):
            archive.write(path, Path("saved_model") / path.relative_to(model))
    return packed
