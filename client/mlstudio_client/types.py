"""The shapes of the API's answers (../shared/API.md), as TypedDicts: the client returns the
JSON as it came, so fields the API adds later are kept, and type checkers and editors know the
documented ones."""
from __future__ import annotations

from typing import Any, TypedDict


class User(TypedDict):
    id: int
    username: str
    email: str


class Login(TypedDict):
    token: str
    user_id: int
    username: str


class Project(TypedDict):
    id: int
    title: str
    location: str
    description: str
    type: str  # Classification | Detection
    user: int
    create_time: str
    threshold: float  # Detection: the score (0, 1] a detection needs
    review_threshold: float  # a model's label scoring at least this is checked


class VideoProgress(TypedDict):
    done: int
    total: int


class Video(TypedDict, total=False):
    id: int
    title: str
    description: str
    url: str
    type: str
    user: int
    project: int
    create_time: str
    status: str  # queued | processing | done | failed
    progress: VideoProgress
    frame_count: int
    fps: float
    interval: int
    model: int
    error: str | None


class Detection(TypedDict, total=False):
    label: str
    score: float | None  # None for a box a person drew
    box: list[float]  # [x1, y1, x2, y2], pixels


class Image(TypedDict, total=False):
    id: int
    title: str
    location: str
    description: str
    url: str
    type: str
    user: int
    project: int
    isTrain: bool  # checked: a person's label, or a model's scoring at least the project's review_threshold
    model_label: bool
    captions: str | None
    boxes: str | None
    video: int | None
    frame_index: int | None
    timestamp_ms: int | None
    score: float | None
    detections: list[Detection]


class VideoWithImages(TypedDict):
    video: Video
    images: list[Image]


class ImagesByVideo(TypedDict):
    type: str
    date: list[Image]
    images: list[Image]


class Tag(TypedDict):
    name: str
    count: int
    avatarImage: Image


class TrainingProgress(TypedDict):
    epoch: int
    epochs: int
    metrics: dict[str, float]


class Model(TypedDict, total=False):
    id: int
    title: str
    location: str
    label_location: str
    description: str
    url: str
    type: str
    user: int
    project: int
    isPublic: bool
    create_time: str
    status: str  # Pending | Training | Trained | Failed
    labels: list[str]
    input_shape: list[int]
    preprocessing: str
    version: int
    metrics: dict[str, Any]
    error: str | None
    progress: TrainingProgress


class Job(TypedDict, total=False):
    """An export or import job of a project (API.md, Additions)."""

    id: int
    status: str
    progress: dict[str, int]
    url: str
    error: str | None


class Progress(TypedDict):
    done: int
    total: int


class EvaluationClass(TypedDict, total=False):
    label: str
    precision: float
    recall: float
    support: int
    f1: float  # Classification
    ap50: float  # Detection
    ap: float


class Evaluation(TypedDict, total=False):
    """A model's evaluation (docs/models.md, Evaluation)."""

    model: int
    project: int | None
    scope: str  # held_out | project
    type: str
    status: str  # Pending | Running | Done | Failed
    progress: Progress
    error: str | None
    images: int
    evaluated_at: str
    classes: list[EvaluationClass]
    accuracy: float
    macro_avg: dict[str, float]
    weighted_avg: dict[str, float]
    confusion_matrix: dict[str, Any]
    map50: float
    map: float
    threshold: float
    curves: dict[str, Any] | None
    chart_url: str | None


class Relabel(TypedDict, total=False):
    """A re-labelling run of a project's images (docs/images.md)."""

    id: int
    project: int
    model_id: int
    scope: str  # review | all
    tag: str | None
    video_id: int | None
    status: str  # queued | running | done | failed | cancelled
    progress: Progress
    changed: int
    error: str | None
    create_time: str
    expires_at: str


class Message(TypedDict):
    message: str
