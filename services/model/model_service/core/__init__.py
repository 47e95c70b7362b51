"""Model rules: who may see and use a model, registering an uploaded model until TF Serving
serves it, deleting it everywhere, and classifying/detecting with it. No HTTP or gRPC here.

`ModelCore` is the one object the REST API, the gRPC servicer, the trainer and the evaluation
worker call; it holds the collaborators and what callers see (access, listing, the API's
Model), and takes each job from its own module:

    registration.py  uploads: convert, check, store, serve; all or nothing
    trained.py       models trained on the server (`method=create`): queue, cancel, register
    removal.py       deletes, and undoing a failed registration
    reconcile.py     the periodic sweep keeping TF Serving and the database in step
    inference.py     Classify and Detect
    evaluations.py   who may evaluate a model, and the chart
    files.py         the model file behind a signed URL
    shared.py        statuses, types, limits, request field checks

The parts are mixins of `ModelCore` rather than objects of their own because they call one
another (a registration that fails is undone by removal; reconcile finishes both) and share
the same collaborators, which tests and the composition root set on the core itself.
"""
from __future__ import annotations

from mlstudio.common import errors, mongo

from .. import preprocessing, trainings as training_status, uploads
from .evaluations import Evaluations
from .files import Files
from .inference import Inference
from .reconcile import Reconcile
from .registration import Registration
from .removal import Removal
from .shared import (CLASSIFICATION, DETECTION, FAILED, KEEP_ASPECT, MODEL_TYPES, PENDING, TRAINED, Converter, Limits,
                     NewModel, Prepared, Projects, artifact_keys, flag, model_type, served_versions)
from .trained import TrainedModels

__all__ = ["CLASSIFICATION", "DETECTION", "FAILED", "KEEP_ASPECT", "MODEL_TYPES", "PENDING", "TRAINED", "Converter",
           "Limits", "ModelCore", "NewModel", "Prepared", "Projects", "artifact_keys", "flag", "model_type",
           "served_versions"]


class ModelCore(Registration, TrainedModels, Removal, Reconcile, Inference, Evaluations, Files):
    """The model service's rules, one object for both doors (REST and gRPC) and the workers."""

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
