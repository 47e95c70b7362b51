"""The video worker's job slots: how many videos one worker process splits at once."""
import os

import pytest

from mlstudio.common import settings as settings_mod
from video_service.settings import VideoSettings, usable_cores

ENV = {"MONGO_URI": "mongodb://127.0.0.1:1"}


def _settings(**environ) -> VideoSettings:
    return settings_mod.load(VideoSettings, {**ENV, **environ})


def test_job_slots_default_to_one_per_core_the_worker_may_use():
    assert _settings().job_slot_count == usable_cores() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("cpu_max, expected", [
    ("max 100000\n", None),  # no quota: the affinity decides
    ("150000 100000\n", 2),  # 1.5 CPUs: two slots, rounded up
    ("50000 100000\n", 1),
    ("100000000 100000\n", None),  # a quota above the cores the process may run on
])
def test_a_cgroup_cpu_quota_caps_the_cores_a_worker_sizes_its_slots_by(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    cores = len(os.sched_getaffinity(0))
    assert usable_cores(path) == (min(expected, cores) if expected is not None else cores)


def test_without_a_readable_cgroup_limit_the_affinity_decides(tmp_path):
    assert usable_cores(tmp_path / "missing") == len(os.sched_getaffinity(0))


def test_job_slots_can_be_set():
    assert _settings(VIDEO_JOB_SLOTS="3").job_slot_count == 3


def test_negative_job_slots_are_refused_naming_the_setting():
    with pytest.raises(settings_mod.ConfigError, match="VIDEO_JOB_SLOTS"):
        _ = _settings(VIDEO_JOB_SLOTS="-1").job_slot_count
