"""Model rules: who may see and use a model, registering an uploaded model until TF Serving
serves it, deleting it everywhere, and classifying/detecting with it. No HTTP or gRPC here.

Registering (one path for uploads now and trained models later): parse the label file, convert
the model into the served SavedModel in a child process (which also validates it), check labels
against the model's output, then allocate the id, keep the artifacts in object storage, install
the SavedModel into TF Serving's repository, apply the config and wait until TF Serving says
AVAILABLE; only then is the model `Trained`. A failure at any step removes everything written
so far (the model, its files, its config entry): an upload either becomes a served model or
leaves nothing behind. A registration whose process died is undone by `reconcile` once its
claim expires; a delete that fails half-way (object storage or TF Serving's repository away,
whatever the error) stays marked and is finished by `reconcile` too.

Trained models (`method=create`, see `trainings.py`) are recorded at once as `Pending` and
trained by the trainer worker, which hands the result to `register_trained`: the same
conversion, checks, storage and serving as an upload, on the model already recorded. A record
whose training job was never queued (the service stopped in between) is queued by `reconcile`.

Evaluations (`evaluation/`): after a training, of its held-out images; on request, of any model
a user may read on their project's labelled images. The core checks who may; the rest is theirs.
"""
from __future__ import annotations

import datetime
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mlstudio.common import errors, metrics, mongo
from mlstudio.common.deadlines import NONE, Deadline
from mlstudio.common.media_files import MediaFile

from . import archive, detections, labels as label_files, pixels, preprocessing, trainings as training_status, uploads
from .conversion import Conversion
from .evaluation.service import chart_path
from .tfserving_client import ModelLoadFailed
from .tfserving_repository import ServedVersion, serving_name
from .user_messages import without_paths

log = logging.getLogger(__name__)

CLASSIFICATION = "Classification"
DETECTION = "Detection"
MODEL_TYPES = (CLASSIFICATION, DETECTION)
PENDING, TRAINED, FAILED = "Pending", "Trained", "Failed"
UNQUEUED_ERROR = ("the training was never started: the service stopped before it had kept the training script; "
                  "create the model again")
# How a model's images are resized (its record's `resize`): absent, squeezed to its input size;
# keep_aspect, longer side to its input size, aspect ratio kept (the graph pads or resizes).
KEEP_ASPECT = "keep_aspect"
MAX_TITLE = 200
MAX_DESCRIPTION = 5000
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Projects(Protocol):
    """The project service, as this service needs it."""

    def get_project(self, project_id: int, user_id: int): ...


class Converter(Protocol):
    def convert(self, source: Path, fmt: str, model_type: str, preprocessing: str, work_dir: Path) -> Conversion: ...


@dataclass(frozen=True)
class Limits:
    max_model_bytes: int = 2 << 30
    max_batch: int = 64
    # How long a registration may take before `reconcile` treats it as abandoned.
    registration_claim_s: float = 1800.0
    # How old a trained model's record without a training job must be before `reconcile`
    # queues it (a request in progress writes the record, then its script, then the job).
    training_queue_grace_s: float = 300.0


@dataclass(frozen=True)
class NewModel:
    """What a caller asks to register (checked already)."""

    user: int
    project: int
    title: str
    description: str
    type: str
    preprocessing: str
    is_public: bool
    source: str  # "upload" or "training"


@dataclass(frozen=True)
class Prepared:
    """A model converted and checked, ready to be stored and served."""

    format: str
    model_file: Path  # named after its format: model.h5, model.keras or model.zip
    labels: list[str]
    conversion: Conversion


def model_type(value, default: str | None = None) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if default:
            return default
        raise errors.InvalidArgument("field type is required: Classification or Detection")
    for known in MODEL_TYPES:
        if str(value).strip().lower() == known.lower():
            return known
    raise errors.InvalidArgument(f"type {value!r} is unknown: use Classification or Detection")


def _text(name: str, value, limit: int, *, required: bool) -> str:
    text = "" if value is None else str(value).strip()
    if required and not text:
        raise errors.InvalidArgument(f"field {name} is required")
    if len(text) > limit:
        raise errors.InvalidArgument(f"field {name} is longer than {limit} characters")
    return text


def flag(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise errors.InvalidArgument(f"field {name} must be true or false, got {value!r}")


def artifact_keys(model_id: int, fmt: str, version: int) -> dict:
    """Object-storage keys of a model's files (immutable, by id)."""
    return {
        "model": f"models/{model_id}/model.{uploads.extension(fmt)}",
        "labels": f"models/{model_id}/labels.txt",
        "saved_model": f"models/{model_id}/v{version}/saved_model.tar.gz",
    }


def served_versions(repository) -> list[ServedVersion]:
    """The model versions TF Serving must hold, from the database."""
    return [ServedVersion(serving_name(doc["_id"]), doc.get("version", 1)) for doc in repository.served()]


class ModelCore:
    def __init__(self, repository, projects: Projects, store, serving, converter: Converter, signer, limits: Limits = Limits(),
                 trainings=None, evaluations=None):
        self.repository = repository
        self.projects = projects
        self.store = store
        self.serving = serving
        self.converter = converter
        self.signer = signer
        self.limits = limits
        self.trainings = trainings  # training_status.Trainings, or None where training is not deployed
        self.evaluations = evaluations  # evaluation.service.Evaluations, or None where the image service is not deployed

    # ----- what callers see

    def public(self, doc: dict, job=None) -> dict:
        """The API's Model; a trained model's status, error and progress come from its `job`."""
        model_key = doc.get("artifacts", {}).get("model")
        status, error = training_status.status_and_error(doc, job)
        trained = doc.get("source") == "training"
        return {
            "id": doc["_id"],
            "title": doc["title"],
            "location": doc.get("location", ""),
            "label_location": doc.get("label_location", ""),
            "description": doc.get("description", ""),
            "url": self.signer.url(f"/models/{doc['_id']}/file") if model_key and status == TRAINED else None,
            "type": doc["type"],
            "user": doc["user"],
            "project": doc["project"],
            "isPublic": bool(doc.get("isPublic")),
            "create_time": mongo.iso(doc["create_time"]),
            "status": status,
            "labels": list(doc.get("labels", [])),
            "input_shape": list(doc.get("input_shape", [])),
            "preprocessing": doc.get("preprocessing", preprocessing.DEFAULT),
            "version": doc.get("version", 1),
            "metrics": doc.get("metrics") or {},
            "error": error,
            "progress": training_status.progress(job) if trained else None,
            "training": doc.get("training") if trained else None,
            "builtin": bool(doc.get("builtin")),
            "threshold": doc.get("threshold") if doc["type"] == DETECTION else None,
        }

    def _job(self, doc: dict):
        if doc.get("source") != "training" or self.trainings is None:
            return None
        return self.trainings.job(doc["_id"])

    def owner(self, model_id: int) -> int:
        """Who owns the model (legacy mode's id-only requests act for them); NotFound if none."""
        doc = self.repository.get(model_id)
        if doc is None:
            raise errors.NotFound(f"model {model_id} not found")
        return doc["user"]

    def _readable(self, model_id: int, user_id: int) -> dict:
        doc = self.repository.get(model_id)
        if doc is None or (doc["user"] != user_id and not (doc.get("isPublic") and doc["status"] == TRAINED)):
            raise errors.NotFound(f"model {model_id} not found")
        return doc

    def list(self, user_id: int, project_id: int) -> list[dict]:
        """The project's models of this user plus public models, of the project's type."""
        project = self.projects.get_project(project_id, user_id)
        docs = self.repository.visible(project_id, user_id, project.type)
        found = self.trainings.jobs_of(docs) if self.trainings is not None else {}
        return [self.public(doc, found.get(doc["_id"])) for doc in docs]

    def get(self, model_id: int, user_id: int) -> dict:
        doc = self._readable(model_id, user_id)
        return self.public(doc, self._job(doc))

    # ----- creating

    def create(self, user_id: int, project_id: int | None, method: str | None, fields: dict, files: list[uploads.Upload]) -> dict:
        """POST /models/all: `method=upload` registers an uploaded model, `method=create` queues a training."""
        method = (method or "").strip().lower()
        if method not in ("upload", "create"):
            raise errors.InvalidArgument(f"method must be upload or create, got {method or 'nothing'!r}", code="bad_method")
        if project_id is None:
            raise errors.InvalidArgument("query parameter project_id is required")
        if method == "create":
            return self.create_training(user_id, project_id, fields, files)
        return self.upload(user_id, project_id, fields, files)

    def upload(self, user_id: int, project_id: int, fields: dict, files: list[uploads.Upload]) -> dict:
        project = self.projects.get_project(project_id, user_id)
        new = self._new_model(project, project_id, user_id, fields, "upload")
        if len(files) != 2:
            raise errors.InvalidArgument("send two files named files: files[0] the model, files[1] its label file", code="files_required")
        with self.serving.workspace() as workspace:
            model_path = workspace / "upload"
            uploads.save(files[0], model_path, self.limits.max_model_bytes, "model file")
            label_path = workspace / "labels"
            uploads.save(files[1], label_path, label_files.MAX_LABEL_FILE_BYTES, "label file")
            return self.register(new, model_path, label_path.read_bytes(), workspace)

    def _new_model(self, project, project_id: int, user_id: int, fields: dict, source: str) -> NewModel:
        new = NewModel(
            user=user_id,
            project=project_id,
            title=_text("title", fields.get("title"), MAX_TITLE, required=True),
            description=_text("description", fields.get("description"), MAX_DESCRIPTION, required=False),
            type=model_type(fields.get("type"), default=project.type),
            preprocessing=preprocessing.mode(fields.get("preprocessing")),
            is_public=flag("isPublic", fields.get("isPublic")),
            source=source,
        )
        if new.type != project.type:
            raise errors.InvalidArgument(f"a {new.type} model cannot belong to a {project.type} project")
        return new

    # ----- training (method=create)

    def create_training(self, user_id: int, project_id: int, fields: dict, files: list[uploads.Upload]) -> dict:
        """Records a model to be trained from the project's tagged images and queues its training;
        the model, `Pending`. 400 when the project has too few tags or images."""
        if self.trainings is None:
            raise errors.NotImplementedYet("training models on the server is not deployed here; train the model elsewhere "
                                           "and send it with method=upload", code="training_not_available")
        project = self.projects.get_project(project_id, user_id)
        new = self._new_model(project, project_id, user_id, fields, "training")
        if new.type != CLASSIFICATION:
            raise errors.InvalidArgument("training on the server makes Classification models; "
                                         "upload Detection models with method=upload", code="training_not_available")
        params = self.trainings.params(fields)
        script = self.trainings.read_script(files)
        self.trainings.check_dataset(project_id, user_id, params.include_unchecked)
        model_id = self.repository.allocate_id()
        doc = self.repository.insert({
            "_id": model_id, "title": new.title, "description": new.description, "type": new.type,
            "user": new.user, "project": new.project, "isPublic": new.is_public, "create_time": mongo.utc_now(),
            "status": PENDING, "labels": [], "input_shape": [], "preprocessing": new.preprocessing, "version": 1,
            "metrics": {}, "error": None, "location": "", "label_location": "", "artifacts": {}, "source": "training",
            "served": False,
            "training": {"params": params.to_dict(), "script": script is not None, "recipe": "script" if script is not None else params.recipe},
        })
        try:
            job = self.trainings.start(model_id, user_id, project_id, params, script, new.preprocessing)
        except BaseException:
            self._undo(doc)
            raise
        log.info("model %s: training queued", model_id)
        return self.public(doc, job)

    def _owned_training(self, model_id: int, user_id: int) -> dict:
        doc = self._readable(model_id, user_id)
        if doc["user"] != user_id or doc.get("source") != "training":
            raise errors.NotFound(f"model {model_id} has no training of yours")
        return doc

    def cancel_training(self, model_id: int, user_id: int) -> dict:
        """Stops the model's training (at once when queued, at the trainer's next check when running)."""
        doc = self._owned_training(model_id, user_id)
        if doc["status"] == TRAINED or self.trainings is None:
            raise errors.NotAcceptable(f"model {model_id} is not being trained", code="not_training")
        return self.public(doc, self.trainings.cancel(model_id))

    def training_log(self, model_id: int, user_id: int) -> str:
        """The training's output (its last part), for the model's owner only."""
        doc = self._owned_training(model_id, user_id)
        return self.trainings.log(doc["_id"]) if self.trainings is not None else ""

    def training_model(self, model_id: int) -> dict | None:
        """The record of a model being trained (None once it is deleted)."""
        return self.repository.get(model_id)

    def register_trained(self, model_id: int, model_file: Path, labels: list[str], metrics: dict,
                         training: dict | None = None) -> dict:
        """Converts, checks, stores and serves what the trainer produced, as an upload is; the
        model, `Trained`, with what the training did (`training`: held-out images and accuracy,
        time) added to its `training` record. Repeating it (a trainer that died while
        registering) does the same again. NotFound when the model was deleted meanwhile."""
        doc = self.training_model(model_id)
        if doc is None:
            raise errors.NotFound(f"model {model_id} not found")
        label_bytes = "\n".join(labels).encode()
        with self.serving.workspace() as workspace:
            source = workspace / "trained"
            shutil.copyfile(model_file, source)
            prepared = self.prepare(doc["type"], doc["preprocessing"], source, label_bytes, workspace)
            keys = artifact_keys(model_id, prepared.format, doc.get("version", 1))
            doc = self.repository.update(model_id, {
                "labels": prepared.labels, "input_shape": prepared.conversion.input_shape, "format": prepared.format,
                "location": keys["model"], "label_location": keys["labels"], "artifacts": keys, "metrics": dict(metrics),
                **{f"training.{name}": value for name, value in (training or {}).items()}})
            if doc is None or doc.get("deleting"):
                raise errors.NotFound(f"model {model_id} not found")
            self._store_artifacts(keys, prepared.model_file, label_bytes, prepared.conversion.saved_model, workspace)
            self._serve(doc, prepared.conversion.saved_model)
        return self._registered(doc)

    def abandon_training(self, model_id: int) -> None:
        """Removes what a training that ends failed or cancelled left: its served copy and
        trained files. The model's record, script and log stay, so its owner can read why."""
        doc = self.repository.get(model_id)
        if doc is None:
            self.store.delete_prefix(f"models/{model_id}/")  # deleted while training: its last log goes too
            return
        if doc["status"] == TRAINED:
            return  # registered by an attempt whose job was then given up: it stays served
        if doc.get("served"):
            self.repository.update(model_id, {"served": False})
            self.serving.withdraw(serving_name(model_id))
        for key in self.store.list_keys(f"models/{model_id}/"):
            if not key.endswith(("/train.py", "/training.log")):
                self.store.delete(key)
        self.repository.update(model_id, {"status": PENDING, "artifacts": {}, "location": "", "label_location": ""})

    def register(self, new: NewModel, model_path: Path, label_bytes: bytes, workspace: Path) -> dict:
        """Converts, checks, stores and serves a model; the new model, `Trained`."""
        prepared = self.prepare(new.type, new.preprocessing, model_path, label_bytes, workspace)
        model_id = self.repository.allocate_id()
        keys = artifact_keys(model_id, prepared.format, 1)
        now = mongo.utc_now()
        doc = self.repository.insert({
            "_id": model_id, "title": new.title, "description": new.description, "type": new.type,
            "user": new.user, "project": new.project, "isPublic": new.is_public, "create_time": now,
            "status": PENDING, "labels": prepared.labels, "input_shape": prepared.conversion.input_shape,
            "preprocessing": new.preprocessing, "version": 1, "metrics": {}, "error": None,
            "location": keys["model"], "label_location": keys["labels"], "artifacts": keys,
            "format": prepared.format, "source": new.source, "served": False,
            "claimed_until": now + datetime.timedelta(seconds=self.limits.registration_claim_s),
        })
        try:
            self._store_artifacts(keys, prepared.model_file, label_bytes, prepared.conversion.saved_model, workspace)
            self._serve(doc, prepared.conversion.saved_model)
        except BaseException:
            self._undo(doc)
            raise
        return self._registered(doc)

    def _registered(self, doc: dict) -> dict:
        """The model just registered; NotFound when it was deleted meanwhile (what the
        registration wrote after the delete's own clean-up goes too)."""
        current = self.repository.get(doc["_id"])
        if current is None:
            self._remove(doc)  # its training (if any) is this very registration: nothing to stop
            raise errors.NotFound(f"model {doc['_id']} not found: it was deleted while it was being registered")
        return self.public(current)

    def prepare(self, type_: str, mode: str, model_path: Path, label_bytes: bytes, workspace: Path) -> Prepared:
        """Parses the labels and converts the model; 4xx with the reason when they do not fit."""
        label_file = label_files.parse_label_file(label_bytes)
        if type_ == CLASSIFICATION and label_file.first_index != 0:
            raise errors.Unprocessable("the label file's class indexes must start at 0 for a classification model", code="bad_label_file")
        fmt = uploads.model_format(model_path)
        model_file = model_path.with_name(f"model.{uploads.extension(fmt)}")
        if model_file != model_path:
            model_path.replace(model_file)
        conversion = self.converter.convert(model_file, fmt, type_, mode, workspace)
        if type_ == CLASSIFICATION and conversion.output_size != len(label_file.labels):
            raise errors.Unprocessable(
                f"the label file names {len(label_file.labels)} classes but the model outputs {conversion.output_size} scores",
                code="labels_mismatch")
        return Prepared(fmt, model_file, label_file.labels, conversion)

    def _store_artifacts(self, keys: dict, model_path: Path, label_bytes: bytes, saved_model: Path, workspace: Path) -> None:
        with open(model_path, "rb") as stream:
            self.store.put_stream(keys["model"], stream)
        self.store.put_bytes(keys["labels"], label_bytes, "text/plain; charset=utf-8")
        packed = workspace / "saved_model.tar.gz"
        archive.pack_tree(saved_model, packed)
        with open(packed, "rb") as stream:
            self.store.put_stream(keys["saved_model"], stream, "application/gzip")

    def _serve(self, doc: dict, saved_model: Path) -> None:
        name, version = serving_name(doc["_id"]), doc["version"]
        self.serving.repository.install(name, version, saved_model)
        self.repository.update(doc["_id"], {"served": True})
        self.serving.publish(name, version)
        self.repository.update(doc["_id"], {"status": TRAINED}, unset=("claimed_until",))
        log.info("model %s is served as %s version %s", doc["_id"], name, version)

    # ----- deleting

    def delete(self, model_id: int, user_id: int) -> None:
        doc = self._readable(model_id, user_id)
        if doc.get("builtin"):
            raise errors.PermissionDenied(f"model {model_id} is built into the studio: it cannot be deleted", code="builtin_model")
        if doc["user"] != user_id:
            raise errors.PermissionDenied(f"model {model_id} is public but not yours: only its owner can delete it")
        self._discard(doc)

    def delete_project_data(self, project_id: int) -> int:
        """Deletes every model of the project; Unavailable (so the caller retries) if one is
        unfinished. Those not finished stay marked, and reconcile finishes them meanwhile."""
        docs = self.repository.of_project(project_id)
        for doc in docs:
            self.repository.mark_deleting(doc["_id"])
        if self.evaluations is not None:
            self.evaluations.forget_project(project_id)  # other users' public models evaluated here too
        for doc in docs:
            try:
                self._stop_training(doc)
                self._finish_removal(doc)
            except errors.DomainError:
                raise
            except Exception as exc:  # a backend's own error: the caller sees a retryable one
                raise errors.Unavailable(f"model {doc['_id']} is not removed yet: {without_paths(str(exc))}") from exc
        return len(docs)

    def _stop_training(self, doc: dict) -> None:
        if doc.get("source") == "training" and self.trainings is not None:
            self.trainings.stop(doc["_id"])

    def _discard(self, doc: dict) -> None:
        """Hides the model at once (an error here is the caller's: nothing was deleted), then
        removes it everywhere; whatever fails then is left to reconcile, which finds the model
        still marked and tries again."""
        self.repository.mark_deleting(doc["_id"])
        self._remove(doc, stop_training=True)

    def _remove(self, doc: dict, *, stop_training: bool = False) -> None:
        """Removes a model marked `deleting` everywhere; a failure is logged, not raised."""
        try:
            if stop_training:
                self._stop_training(doc)
            self._finish_removal(doc)
        except errors.DomainError as exc:
            log.warning("model %s: removal unfinished, will retry: %s", doc["_id"], exc.message)
        except Exception:  # noqa: BLE001 - a backend's own error (storage, files): the model stays marked, retried
            log.exception("model %s: removal unfinished, will retry", doc["_id"])

    def _undo(self, doc: dict) -> None:
        """Removes a registration that failed; a failure here is left to reconcile, and never
        hides the error that made the registration fail."""
        try:
            self._discard(doc)
        except Exception:  # noqa: BLE001 - the model stays marked (or claimed) and reconcile finishes it
            log.exception("model %s: undoing the failed registration failed", doc["_id"])

    def _finish_removal(self, doc: dict) -> None:
        """Removes the served copy, then the files, then the record: a failure leaves the record
        (marked `deleting`) for the next attempt."""
        self.serving.withdraw(serving_name(doc["_id"]))
        if self.evaluations is not None:
            self.evaluations.forget_model(doc["_id"])
        self.store.delete_prefix(f"models/{doc['_id']}/")
        self.repository.remove(doc["_id"])
        log.info("model %s removed", doc["_id"])

    # ----- keeping TF Serving in step

    def reconcile(self) -> None:
        """Undoes abandoned registrations, finishes deletes, queues trainings recorded without
        their job, restores SavedModels missing from TF Serving's repository (a fresh TF
        Serving), and re-applies the config if needed."""
        for doc in self.repository.abandoned_registrations(mongo.utc_now()):
            log.warning("model %s: registration was abandoned; removing it", doc["_id"])
            self._discard(doc)
        for doc in self.repository.pending_deletions():
            self._discard(doc)
        self.queue_lost_trainings()
        if self.restore_missing() or self.serving.dirty:
            try:
                self.serving.apply()
            except ModelLoadFailed:
                self._fail_unloadable()
                self.serving.apply()

    def _fail_unloadable(self) -> None:
        """Marks `Failed` (and stops serving) the models TF Serving could not load, so that one
        broken model does not make every later config reload fail."""
        ids = {serving_name(doc["_id"]): doc["_id"] for doc in self.repository.served()}
        for item, message in self.serving.failed(served_versions(self.repository)).items():
            model_id = ids[item.name]
            log.error("model %s: TF Serving cannot load it: %s", model_id, message)
            self.repository.update(model_id, {"status": FAILED, "served": False, "error": f"TensorFlow Serving cannot load it: {message}"})

    def queue_lost_trainings(self) -> None:
        """Queues the training of each model recorded without its job (the service stopped
        between the two); fails those whose uploaded script was lost with the request."""
        if self.trainings is None:
            return
        before = mongo.utc_now() - datetime.timedelta(seconds=self.limits.training_queue_grace_s)
        docs = self.repository.pending_trainings(before)
        queued = self.trainings.jobs_of(docs)
        for doc in docs:
            if doc["_id"] in queued:
                continue
            try:
                job = self.trainings.requeue(doc)
            except Exception:  # noqa: BLE001 - storage or database away: tried again at the next reconcile
                log.exception("model %s: its training was never queued, and queuing it failed; will retry", doc["_id"])
                continue
            if job is None:
                log.error("model %s: its training was never queued and its script is lost", doc["_id"])
                self.repository.update(doc["_id"], {"status": FAILED, "error": UNQUEUED_ERROR})
            else:
                log.warning("model %s: its training was never queued; queued now", doc["_id"])

    def restore_missing(self) -> int:
        """Copies back from object storage each served SavedModel missing from the repository."""
        restored = 0
        for doc in self.repository.served():
            name, version = serving_name(doc["_id"]), doc.get("version", 1)
            if self.serving.repository.has(name, version):
                continue
            try:
                with self.serving.workspace() as workspace:
                    packed = workspace / "saved_model.tar.gz"
                    self.store.download_to(doc["artifacts"]["saved_model"], packed)
                    archive.unpack_tree(packed, workspace / "saved_model")
                    self.serving.repository.install(name, version, workspace / "saved_model")
            except errors.NotFound:
                log.error("model %s: its SavedModel is missing from object storage too", doc["_id"])
                self._stop_serving(doc, "the served copy of this model was lost; upload it again")
                continue
            except errors.Unprocessable as exc:  # kept before graphs were checked: never served again
                log.error("model %s: its SavedModel is refused: %s", doc["_id"], exc.message)
                self._stop_serving(doc, f"this model can no longer be served: {exc.message}")
                continue
            log.info("model %s: SavedModel restored from object storage", doc["_id"])
            restored += 1
        return restored

    def _stop_serving(self, doc: dict, error: str) -> None:
        self.repository.update(doc["_id"], {"status": FAILED, "served": False, "error": error})
        self.serving.dirty = True

    # ----- inference

    def _usable(self, model_id: int, user_id: int, wanted_type: str) -> dict:
        doc = self._readable(model_id, user_id)
        if doc["type"] != wanted_type:
            verb = "Classify" if doc["type"] == CLASSIFICATION else "Detect"
            raise errors.InvalidArgument(f"model {model_id} is a {doc['type']} model; use {verb}", code="wrong_model_type")
        if doc["status"] != TRAINED:
            raise errors.NotAcceptable(f"model {model_id} is not ready (status {doc['status']})", code="model_not_ready")
        return doc

    def _predict(self, doc: dict, images: list[bytes], output_keys: list[str], deadline: Deadline) -> tuple[dict, list[tuple[int, int]]]:
        """One Predict call per at most `max_batch` images of one input size; outputs joined in
        image order. A model recorded with `resize: keep_aspect` resizes inside its own graph:
        it gets images at their own aspect ratio (longer side its input size), not squeezed.
        Stops (DeadlineExceeded) as soon as the caller is no longer waiting."""
        height, width, _ = doc["input_shape"]
        deadline.check("predicting")
        if doc.get("resize") == KEEP_ASPECT:
            groups = pixels.to_batches_keeping_aspect(images, max(height, width))
        else:
            groups = [(list(range(len(images))), pixels.to_batch(images, height, width))]
        name, version = serving_name(doc["_id"]), doc.get("version", 1)
        rows: dict[str, list] = {key: [None] * len(images) for key in output_keys}
        sizes: list = [None] * len(images)
        with metrics.prediction_timer(doc["_id"], doc.get("type"), len(images)):
            for indexes, batch in groups:
                for part in pixels.chunks(len(indexes), self.limits.max_batch):
                    deadline.check("predicting")
                    outputs = self.serving.predict(name, version, {"images": batch.pixels[part]}, output_keys, deadline=deadline)
                    for key in output_keys:
                        for index, row in zip(indexes[part], outputs[key]):
                            rows[key][index] = row
                for index, size in zip(indexes, batch.sizes):
                    sizes[index] = size
        deadline.check("answering the prediction")
        return {key: np.stack(rows[key]) for key in output_keys}, sizes

    def classify(self, model_id: int, user_id: int, images: list[bytes], deadline: Deadline = NONE) -> list[detections.Classification]:
        doc = self._usable(model_id, user_id, CLASSIFICATION)
        outputs, _sizes = self._predict(doc, images, ["probabilities"], deadline)
        return detections.classify(outputs["probabilities"], doc["labels"])

    def detect(self, model_id: int, user_id: int, images: list[bytes], threshold: float = 0.0,
               deadline: Deadline = NONE) -> list[list[detections.Detection]]:
        """Per image, the detections scoring at least `threshold` (0: the model's own default,
        else `detections.DEFAULT_THRESHOLD`), each with its score."""
        if threshold and not 0 < threshold <= 1:
            raise errors.InvalidArgument(f"threshold must be in (0, 1], got {threshold}", code="invalid_threshold")
        doc = self._usable(model_id, user_id, DETECTION)
        threshold = threshold or doc.get("threshold") or detections.DEFAULT_THRESHOLD
        keys = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]
        outputs, sizes = self._predict(doc, images, keys, deadline)
        return detections.boxes_in_pixels(outputs, sizes, doc["labels"], threshold)

    # ----- evaluation (evaluation/service.py)

    def _evaluations(self):
        if self.evaluations is None:
            raise errors.NotImplementedYet("evaluating models is not deployed here: it needs the image service",
                                           code="evaluation_not_available")
        return self.evaluations

    def evaluate(self, model_id: int, user_id: int, project_id: int | None) -> dict:
        """Queues the evaluation of a model the user may read on their project's labelled images."""
        evaluations = self._evaluations()
        if project_id is None:
            raise errors.InvalidArgument("query parameter project_id is required: the project whose images judge the model")
        doc = self._readable(model_id, user_id)
        project = self.projects.get_project(project_id, user_id)
        return evaluations.start(doc, user_id, project_id, project.type)

    def evaluation(self, model_id: int, user_id: int, project_id: int | None = None) -> dict:
        """The evaluation on the user's project, or (no project) of the model's training, whose
        held-out images are its owner's only."""
        evaluations = self._evaluations()
        doc = self._readable(model_id, user_id)
        if project_id is None:
            if doc["user"] != user_id:
                raise errors.NotFound(f"model {model_id} has no training of yours")
        else:
            self.projects.get_project(project_id, user_id)
        return evaluations.get(doc, project_id)

    def evaluate_held_out(self, model_id: int, history: list[dict]) -> None:
        """After a training: queues the evaluation of the model on its held-out images."""
        doc = self.repository.get(model_id)
        if self.evaluations is not None and doc is not None and doc["status"] == TRAINED:
            self.evaluations.after_training(doc, history)

    def evaluation_chart(self, model_id: int, project_id: int | None, expires: str | None, signature: str | None) -> MediaFile:
        """An evaluation's chart behind a valid signed URL."""
        self.signer.verify(chart_path(model_id, project_id), expires, signature)
        return self._evaluations().chart(model_id, project_id)

    # ----- the model file, through a signed URL

    def model_file(self, model_id: int, expires: str | None, signature: str | None) -> MediaFile:
        """The uploaded model file behind a valid signed URL."""
        self.signer.verify(f"/models/{model_id}/file", expires, signature)
        doc = self.repository.get(model_id)
        if doc is None or doc["status"] != TRAINED:
            raise errors.NotFound(f"model {model_id} not found")
        key = doc["artifacts"]["model"]
        info = self.store.stat(key)
        return MediaFile(key, "application/octet-stream", info.size, info.etag, self.signer.ttl_s,
                         download_name=f"model-{model_id}.{key.rsplit('.', 1)[-1]}")

    def read_model_file(self, media: MediaFile, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.store.read_range(media.key, start, length)
