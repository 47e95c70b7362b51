"""Fixtures of the video service's unit tests: generated videos and a core wired to fakes.

User 1 owns project 10 (Classification) and 11 (Detection); user 2 owns project 20. Model 7 is
user 1's Classification model, 8 a public Detection model, 9 user 2's private model, 6 user 1's
model still training."""
from dataclasses import dataclass
from pathlib import Path

import pytest
from video_fakes import FakeImages, FakeJobQueue, FakeModels, FakeProjects, FakeRepository, write_light_dark_video

from mlstudio.common.media_urls import MediaSigner
from mlstudio.common.storage import LocalObjectStore
from video_service.core import VideoCore

NOW = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path:
    """The project's test media (`../shared/data` beside the checkout, or `shared/data` in it)."""
    for candidate in (ROOT / "shared" / "data", ROOT.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the shared test media are missing: expected {ROOT.parent / 'shared' / 'data'}")


@pytest.fixture(scope="session")
def bottle_video() -> Path:
    """A real H.264 video: 1189 frames as decoded."""
    return shared_data_dir() / "bottle-detection.mp4"


@pytest.fixture(scope="session")
def light_dark_video(tmp_path_factory) -> Path:
    """200 frames (mp4v, 25 fps): 0-99 white, 100-199 black."""
    return write_light_dark_video(tmp_path_factory.mktemp("videos") / "light-dark.mp4")


@dataclass
class World:
    core: VideoCore
    repository: FakeRepository
    jobs: FakeJobQueue
    store: LocalObjectStore
    images: FakeImages
    signer: MediaSigner


@pytest.fixture
def world(tmp_path) -> World:
    repository, job_queue, images = FakeRepository(), FakeJobQueue(), FakeImages()
    store = LocalObjectStore(tmp_path / "objects")
    projects = FakeProjects({10: (1, "Classification"), 11: (1, "Detection"), 20: (2, "Classification")})
    models = FakeModels({7: {"user": 1, "type": "Classification"}, 8: {"user": 3, "type": "Detection", "public": True},
                         9: {"user": 2, "type": "Classification"}, 6: {"user": 1, "type": "Classification", "status": "Training"}})
    signer = MediaSigner("test-key", "http://gateway.test", 3600)
    core = VideoCore(repository, job_queue, store, projects, models, images, signer, wait_timeout_s=0.1, cancel_wait_s=0.1,
                     clock=lambda: NOW, poll_s=0.01)
    return World(core, repository, job_queue, store, images, signer)
