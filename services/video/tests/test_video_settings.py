"""The video worker's job slots: how many videos one worker process splits at once."""
import os

import pytest

from mlstudio.common import settings as settings_mod
from video_service.settings import VideoSettings

ENV = {"MONGO_URI": "mongodb://127.0.0.1:1"}


def _settings(**environ) -> VideoSettings:
    return settings_mod.load(VideoSettings, {**ENV, **environ})


def test_job_slots_default_to_one_per_core_the_worker_may_use():
    assert _settings().job_slot_count == len(os.sched_getaffinity(0))


def test_job_slots_can_be_set():
    assert _settings(VIDEO_JOB_SLOTS="3").job_slot_count == 3


def test_negative_job_slots_are_refused_naming_the_setting():
    with pytest.raises(settings_mod.ConfigError, match="VIDEO_JOB_SLOTS"):
        _ = _settings(VIDEO_JOB_SLOTS="-1").job_slot_count
