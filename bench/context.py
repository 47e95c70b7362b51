"""What every scenario gets: the running stack, a signed-in account, the benchmark's settings
and where it may write scratch files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import models
from .stack import Account, BenchStack

MiB = 1 << 20


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions (`--quick` shrinks them for trying the harness, not for numbers)."""

    repeats: int = 5  # runs per measurement; the median counts
    video_interval: int = 10
    sparse_seconds: int = 60
    sparse_interval: int = 30
    predict_images: int = 256
    predict_batch: int = 64
    gateway_requests: int = 2000
    gateway_clients: int = 4
    gateway_rounds: int = 4  # direct and gateway alternate in this many blocks
    upload_bytes: int = 500 * MiB
    upload_interval: int = 1000  # the uploaded video is split too (afterwards); keep that short
    export_sizes: tuple[int, int] = (1_000, 10_000)  # images of the two exported projects
    list_images: int = 50_000  # images of the listed project

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            repeats=1,
            sparse_seconds=10,
            predict_images=64,
            gateway_requests=200,
            upload_bytes=50 * MiB,
            export_sizes=(200, 2_000),
            list_images=5_000,
        )


@dataclass
class Context:
    stack: BenchStack
    account: Account
    settings: Settings
    work_dir: Path  # cached inputs (kept between runs)
    scratch_dir: Path  # this run's files (removed afterwards)
    _served: dict = field(default_factory=dict)

    def new_project(self, title: str) -> int:
        return self.account.new_project("Classification", f"bench {title}")

    def served(self, name: str) -> tuple[models.SavedModel, int]:
        """A benchmark model (`video` or `predict`), saved and uploaded once per run: its files
        and its id in the studio."""
        if name not in self._served:
            saved = {"video": models.video_model, "predict": models.predict_model}[name](self.scratch_dir / "models")
            project_id = self.new_project(f"{name} model")
            model_id = self.account.upload_model(
                project_id, saved.model_file, saved.label_file, "Classification", f"bench {name}"
            )
            self._served[name] = (saved, model_id)
        return self._served[name]
