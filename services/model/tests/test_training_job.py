"""The trainer's job handler with fakes: the dataset from the image service, the sandbox's outcome,
progress into the job, the trained model kept before registration, logs, failures and retries."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlstudio.common import errors, jobs
from mlstudio.common.storage import LocalObjectStore
from model_service.training.features import Backbone
from model_service.training.job import TRAIN_JOB, TrainerConfig, TrainModelHandler, log_key, remove_tree, training_payload
from model_service.training.params import TrainingParams
from model_service.training.sandbox import Confinement, Limits, Outcome


def png(shade: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (10 + shade, 20, 30)).save(out, "PNG")
    return out.getvalue()


class FakeImages:
    def __init__(self, tags=("red", "blue"), per_tag=3):
        self.items = [types.SimpleNamespace(image_id=i * 10 + n, tag=tag, content=png(i * 10 + n), content_type="image/png")
                      for i, tag in enumerate(tags) for n in range(per_tag)]
        self.calls = []

    def stream_dataset(self, project_id, user_id, *, include_unchecked=False):
        self.calls.append((project_id, user_id, include_unchecked))
        return iter(self.items)


class FakeRegistrar:
    def __init__(self):
        self.models = {7: {"_id": 7, "status": "Pending"}}
        self.registered = []
        self.abandoned = []
        self.evaluations = []
        self.error: errors.DomainError | None = None

    def training_model(self, model_id):
        return self.models.get(model_id)

    def register_trained(self, model_id, model_file, labels, metrics, training=None):
        if self.error:
            raise self.error
        self.registered.append((model_id, Path(model_file).read_bytes(), labels, metrics))
        self.trainings = getattr(self, "trainings", []) + [training]
        return {"id": model_id, "status": "Trained", "metrics": metrics}

    def abandon_training(self, model_id):
        self.abandoned.append(model_id)

    def evaluate_held_out(self, model_id, history):
        self.evaluations.append((model_id, history))


class FakeSandbox:
    """Plays a training: reports `epochs` epochs, then ends as `outcome_for(workdir)` says."""

    runs = []

    def __init__(self, limits, confinement, *, epochs=2, outcome=None, effect=None):
        self.limits = limits
        self.epochs = epochs
        self.outcome = outcome
        self.effect = effect  # what the training does in its working directory

    def run(self, training, log_tail, on_progress, check):
        seen = {"script": training.script.read_text(), "classes": sorted(p.name for p in (training.workdir / "data").iterdir())}
        if self.effect:
            seen["effect"] = self.effect(training)
        FakeSandbox.runs.append((training, self.limits, seen))
        log_tail.write(b"epoch output\n")
        for epoch in range(1, self.epochs + 1):
            on_progress(epoch, self.epochs, {"accuracy": epoch / self.epochs, "bad.name$": 1.0})
            check()
        if self.outcome is not None:
            return self.outcome
        model = training.workdir.parent / "model" / "model.keras"
        model.parent.mkdir()
        model.write_bytes(b"trained weights")
        return Outcome("done", None, {"accuracy": 1.0, "val_accuracy": 0.9}, model, ("network: none",))


class FakeContext:
    """The job context as a handler sees it; `stop_with` makes check() raise."""

    def __init__(self, job: jobs.Job):
        self.job = job
        self.reports = []
        self.stop_with: Exception | None = None

    def report(self, done, total, checkpoint=None, details=None):
        self.reports.append((done, total, checkpoint, details))
        self.job = dataclasses.replace(self.job, progress={**(details or {}), "done": done, "total": total},
                                       checkpoint=dict(checkpoint) if checkpoint is not None else self.job.checkpoint)
        self.check()

    def check(self):
        if self.stop_with:
            raise self.stop_with

    def heartbeat(self):
        pass


def make_job(script=False, checkpoint=None, **params):
    payload = training_payload(7, 1, 10, TrainingParams(**params), script, "raw")
    return jobs.Job(id="model-7", kind=TRAIN_JOB, payload=payload, status=jobs.RUNNING, attempts=1, max_attempts=3, owner="w",
                    lease_expires=None, progress={"done": 0, "total": 2}, checkpoint=checkpoint or {}, error="", result={},
                    cancel_requested=False)


@pytest.fixture
def world(tmp_path):
    FakeSandbox.runs = []
    config = TrainerConfig(work_root=tmp_path / "training", limits=Limits(), confinement=Confinement(), max_time_limit_s=600,
                           cpu_limit_s=0, min_images_per_tag=3, max_dataset_bytes=1 << 20)
    world = types.SimpleNamespace(images=FakeImages(), registrar=FakeRegistrar(), store=LocalObjectStore(tmp_path / "objects"),
                                  config=config, sandbox_options={})
    world.handler = lambda: TrainModelHandler(world.registrar, world.images, world.store, world.config,
                                              lambda limits, confinement: FakeSandbox(limits, confinement, **world.sandbox_options))
    return world


def test_include_unchecked_asks_the_image_service_for_the_images_waiting_for_review_too(world):
    job = make_job(epochs=1, include_unchecked=True)
    world.handler().run(job, FakeContext(job))
    assert world.images.calls == [(10, 1, True)]


def test_a_training_reports_progress_keeps_its_model_and_registers_it(world, tmp_path):
    job = make_job(epochs=2, time_limit_s=9999)
    context = FakeContext(job)
    result = world.handler().run(job, context)
    assert result == {"metrics": {"accuracy": 1.0, "val_accuracy": 0.9}}
    assert world.images.calls == [(10, 1, False)]  # checked images only, by default
    training, limits, seen = FakeSandbox.runs[0]
    assert training.trusted and seen["script"].startswith('"""The built-in training recipe')
    assert training.params["labels"] == ["blue", "red"] and training.params["epochs"] == 2
    assert limits.wall_s == 600  # capped by the trainer's maximum
    assert seen["classes"] == ["blue", "red"]
    assert [r[:2] for r in context.reports] == [(1, 2), (2, 2), (2, 2)]
    assert context.reports[0][3] == {"metrics": {"accuracy": 0.5, "bad_name_": 1.0}}
    checkpoint = dict(context.reports[-1][2])
    assert checkpoint.pop("training")["recipe"] == "transfer"
    history = [{"epoch": 1, "accuracy": 0.5, "bad_name_": 1.0}, {"epoch": 2, "accuracy": 1.0, "bad_name_": 1.0}]
    assert checkpoint.pop("history") == history
    assert checkpoint == {"model_key": "models/7/trained/model.keras", "model_name": "model.keras", "labels": ["blue", "red"],
                          "metrics": {"accuracy": 1.0, "val_accuracy": 0.9}}
    assert world.store.get_bytes("models/7/trained/model.keras") == b"trained weights"
    assert world.registrar.registered == [(7, b"trained weights", ["blue", "red"], {"accuracy": 1.0, "val_accuracy": 0.9})]
    assert world.registrar.evaluations == [(7, history)]  # once registered, evaluated with every epoch's metrics
    log_text = world.store.get_bytes(log_key(7)).decode()
    assert log_text.startswith("[sandbox] network: none\n") and "epoch output" in log_text
    assert list((tmp_path / "training").iterdir()) == []  # the job's directory is gone


def test_an_uploaded_script_runs_untrusted(world):
    world.store.put_bytes("models/7/train.py", b"def train(d, o, p): pass\n")
    world.handler().run(make_job(script=True), FakeContext(make_job(script=True)))
    training, _, seen = FakeSandbox.runs[0]
    assert not training.trusted and seen["script"] == "def train(d, o, p): pass\n"


def test_a_failed_training_fails_the_job_with_its_error_and_keeps_the_log(world):
    world.sandbox_options["outcome"] = Outcome("crash", "the training script failed: ValueError: bad")
    with pytest.raises(jobs.JobFailed, match="the training script failed: ValueError: bad"):
        world.handler().run(make_job(), FakeContext(make_job()))
    assert world.registrar.registered == [] and "epoch output" in world.store.get_bytes(log_key(7)).decode()


def test_too_few_images_fail_the_job_before_training(world):
    world.images = FakeImages(tags=("red",))
    with pytest.raises(jobs.JobFailed, match="at least two tags"):
        world.handler().run(make_job(), FakeContext(make_job()))
    assert FakeSandbox.runs == []


def test_a_cancel_seen_at_an_epoch_stops_the_training(world):
    context = FakeContext(make_job())
    context.stop_with = jobs.JobCancelled("cancelled")
    with pytest.raises(jobs.JobCancelled):
        world.handler().run(make_job(), context)
    assert world.registrar.registered == []
    world.handler().cleanup(make_job())
    assert world.registrar.abandoned == [7]


def test_a_retry_after_training_only_registers_again(world):
    world.store.put_bytes("models/7/trained/model.keras", b"kept weights")
    checkpoint = {"model_key": "models/7/trained/model.keras", "model_name": "model.keras", "labels": ["blue", "red"], "metrics": {"accuracy": 1.0},
                  "history": [{"epoch": 1, "accuracy": 1.0}]}
    job = make_job(checkpoint=checkpoint)
    world.handler().run(job, FakeContext(job))
    assert FakeSandbox.runs == [] and world.images.calls == []
    assert world.registrar.registered == [(7, b"kept weights", ["blue", "red"], {"accuracy": 1.0})]
    assert world.registrar.evaluations == [(7, [{"epoch": 1, "accuracy": 1.0}])]


def test_a_model_that_cannot_be_served_fails_with_the_reason(world):
    world.registrar.error = errors.Unprocessable("the label file names 2 classes but the model outputs 3 scores")
    with pytest.raises(jobs.JobFailed, match="the trained model cannot be served: the label file names 2 classes"):
        world.handler().run(make_job(), FakeContext(make_job()))


def test_a_deleted_or_already_registered_model_is_not_trained(world):
    world.registrar.models[7]["status"] = "Trained"
    registered = make_job(checkpoint={"history": [{"epoch": 1, "loss": 0.5}]})
    assert world.handler().run(registered, FakeContext(registered)) == {"metrics": {}}
    # the attempt that registered it died before its evaluation was queued: this one queues it
    assert world.registrar.evaluations == [(7, [{"epoch": 1, "loss": 0.5}])]
    del world.registrar.models[7]
    with pytest.raises(jobs.JobCancelled):
        world.handler().run(make_job(), FakeContext(make_job()))
    assert FakeSandbox.runs == []


def test_the_next_attempt_clears_what_a_killed_attempt_left(world, tmp_path):
    left = tmp_path / "training" / "model-7" / "work"  # the same job's directory, as a killed trainer leaves it
    left.mkdir(parents=True)
    (left / "train.py").write_text("an old copy")
    job = make_job()
    world.handler().run(job, FakeContext(job))
    assert world.registrar.registered and list((tmp_path / "training").iterdir()) == []


def test_a_sweep_removes_the_work_directories_of_jobs_no_trainer_runs(world, tmp_path):
    root = tmp_path / "training"
    for name in ("model-1", "model-2", "model-3-0123456789abcdef"):  # the last: a name of older trainers
        (root / name / "work" / "data").mkdir(parents=True)
    handler = world.handler()
    assert handler.sweep_work_root(lambda job_id: job_id == "model-2") == ["model-1", "model-3-0123456789abcdef"]
    assert [path.name for path in root.iterdir()] == ["model-2"]  # held by a live trainer: kept
    assert handler.sweep_work_root(lambda job_id: False) == ["model-2"]
    assert handler.sweep_work_root(lambda job_id: False) == []


def test_work_directories_nested_deeper_than_python_can_recurse_are_removed(tmp_path):
    """What a script can make in a fraction of a second; shutil.rmtree raises RecursionError on it."""
    top = tmp_path / "model-7"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(3000):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    remove_tree(top)
    assert not top.exists()


# A trainer stopping gracefully: SIGTERM (sent to its whole process group, as the local stack and
# the tests stop it) only asks it to finish its job, which ends by removing the job's directory.
STOPPING_TRAINER = """
import os, signal, sys
from pathlib import Path
from model_service.training.job import remove_tree
signal.signal(signal.SIGTERM, lambda *_: None)
print("removing", flush=True)
remove_tree(Path(sys.argv[1]))
os._exit(0)  # before Python's shutdown restores the default action of SIGTERM
"""


def test_stopping_the_trainer_s_process_group_does_not_interrupt_the_removal_of_a_work_directory(tmp_path):
    top = tmp_path / "model-7"
    for folder in range(40):
        (top / str(folder)).mkdir(parents=True)
        for name in range(250):
            (top / str(folder) / str(name)).touch()
    trainer = subprocess.Popen([sys.executable, "-c", STOPPING_TRAINER, str(top)], stdout=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert trainer.stdout.readline() == "removing\n"
        while trainer.poll() is None:  # a signal every few milliseconds reaches whatever the group runs meanwhile
            os.killpg(trainer.pid, signal.SIGTERM)
            time.sleep(0.005)
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
        trainer.wait()
    assert trainer.returncode == 0 and not top.exists()


def test_a_stratified_seeded_share_of_each_tag_is_held_out_and_recorded_with_the_recipe_and_time(world):
    world.images = FakeImages(tags=("red", "blue"), per_tag=6)
    for _ in range(2):
        world.handler().run(make_job(validation_split=0.34), FakeContext(make_job(validation_split=0.34)))
    (first, _, _), (second, _, _) = FakeSandbox.runs
    held_out = first.params["held_out"]
    assert held_out == second.params["held_out"]  # seeded: the same split again
    assert sorted(name.split("/")[0] for name in held_out) == ["blue", "blue", "red", "red"]  # a third of each tag
    record = world.registrar.trainings[0]
    assert record["recipe"] == "transfer" and record["time_s"] >= 0
    assert record["held_out"] == {"images": [int(name.split("/")[1].split(".")[0]) for name in held_out], "accuracy": 0.9}
    other = world.handler()
    other.run(make_job(validation_split=0.34, seed=7), FakeContext(make_job(validation_split=0.34, seed=7)))
    assert FakeSandbox.runs[2][0].params["held_out"] != held_out


def _vector(value: float) -> bytes:
    out = io.BytesIO()
    np.save(out, np.full(1280, value, np.float32), allow_pickle=False)
    return out.getvalue()


def test_the_backbone_is_readable_and_the_built_in_recipe_s_features_are_cached_for_the_next_training(world, tmp_path):
    model_file = tmp_path / "backbone" / "features.keras"
    model_file.parent.mkdir()
    model_file.write_bytes(b"keras")
    cache = tmp_path / "feature-cache"
    world.config = dataclasses.replace(world.config, backbone=Backbone(model_file, "v1"), feature_cache=cache)
    digests = sorted({hashlib.sha256(item.content).hexdigest() for item in world.images.items})
    (cache / "v1").mkdir(parents=True)
    (cache / "v1" / f"{digests[0]}.npy").write_bytes(_vector(1.0))

    def compute(training):
        given = sorted(os.listdir(training.workdir / training.params["feature_cache"]))
        out = training.workdir / "output" / "features"
        out.mkdir(parents=True)
        (out / f"{digests[1]}.npy").write_bytes(_vector(2.0))
        (out / f"{digests[2]}.npy").write_bytes(b"not features")  # refused: not a .npy of 1280 floats
        (out / f"{digests[3]}.npy").symlink_to(model_file)  # refused: a link
        (out / "other.npy").write_bytes(_vector(3.0))  # refused: not an image's digest
        return given

    world.sandbox_options["effect"] = compute
    world.handler().run(make_job(), FakeContext(make_job()))
    training, _, seen = FakeSandbox.runs[0]
    assert training.params["backbone"] == str(model_file) and training.readable == (str(model_file.parent),)
    assert seen["effect"] == [f"{digests[0]}.npy"]  # what the cache had for this dataset
    assert sorted(os.listdir(cache / "v1")) == sorted([f"{digests[0]}.npy", f"{digests[1]}.npy"])
    assert np.load(cache / "v1" / f"{digests[1]}.npy").tolist() == [2.0] * 1280

    world.store.put_bytes("models/7/train.py", b"def train(d, o, p): pass\n")
    world.sandbox_options["effect"] = lambda training: (training.workdir / "output" / "features").mkdir(parents=True) or \
        (training.workdir / "output" / "features" / f"{digests[4]}.npy").write_bytes(_vector(4.0))
    world.handler().run(make_job(script=True), FakeContext(make_job(script=True)))
    script_run = FakeSandbox.runs[1][0]
    assert "feature_cache" not in script_run.params and script_run.params["backbone"] == str(model_file)
    assert f"{digests[4]}.npy" not in os.listdir(cache / "v1")  # an uploaded script's features are not trusted
