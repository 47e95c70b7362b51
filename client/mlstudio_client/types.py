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


class Detection(TypedDict):
    label: str
    score: float
    box: list[float]


class Image(TypedDict, total=False):
    id: int
    title: str
    location: str
    description: str
    url: str
    type: str
    user: int
    project: int
    isTrain: bool
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


class Message(TypedDict):
    message: str
