"""What every part of the model core shares: the model statuses and types, the limits, what a
caller asks to register, and the checks of a request's fields."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlstudio.common import errors
from mlstudio.common.vocabulary import CLASSIFICATION, DETECTION, FAILED, MODEL_TYPES, PENDING, TRAINED  # noqa: F401 - the core's words

from .. import uploads
from ..conversion import Conversion
from ..tfserving_repository import ServedVersion, serving_name

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
