"""Training on the model service's side, through ModelCore and the REST API with fakes (conftest's
`world` plus a job queue and an image service): create checks and queues, status from the job,
registration of the trained model, cancel, logs, deletes."""
from __future__ import annotations

import base64
import datetime
import dataclasses
import io
import json
import types

import pytest

from mlstudio.common import errors, jobs, settings as settings_mod
from model_service.app import create_app
from model_service.settings import ModelSettings
from model_service.trainings import TrainingLimits, Trainings
from model_service.uploads import Upload


class FakeJobQueue:
    """The job queue's producer side over a dict; `run`, `fail`... play the trainer."""

    def __init__(self):
        self.jobs: dict[str, jobs.Job] = {}

    def enqueue(self, job_id, kind, payload, *, total=0):
        self.jobs.setdefault(job_id, jobs.Job(id=job_id, kind=kind, payload=dict(payload), status=jobs.QUEUED, attempts=0, max_attempts=3,
                                              owner=None, lease_expires=None, progress={"done": 0, "total": total}, checkpoint={},
                                              error="", result={}, cancel_requested=False))
        return self.jobs[job_id]

    def get(self, job_id):
        return self.jobs.get(job_id)

    def get_many(self, job_ids):
        return {key: self.jobs[key] for key in job_ids if key in self.jobs}

    def cancel(self, job_id):
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.status == jobs.QUEUED:
            job = dataclasses.replace(job, status=jobs.CANCELLED)
        elif job.status == jobs.RUNNING:
            job = dataclasses.replace(job, cancel_requested=True)
        self.jobs[job_id] = job
        return job

    def is_active(self, job_id):
        return False

    def delete(self, job_id):
        self.jobs.pop(job_id, None)

    def set(self, job_id, **changes):
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], **changes)


class FakeImages:
    def __init__(self):
        self.tags = {10: ["red"] * 5 + ["blue"] * 5}
        self.unchecked: dict[int, list[str]] = {}

    def list_images(self, project_id, user_id):
        unchecked = self.unchecked.get(project_id, [])
        return ([types.SimpleNamespace(tag=tag, is_train=True) for tag in self.tags.get(project_id, [])]
                + [types.SimpleNamespace(tag=tag, is_train=False) for tag in unchecked])


@pytest.fixture
def training(world):
    world.queue = FakeJobQueue()
    world.images = FakeImages()
    world.core.trainings = Trainings(world.queue, world.images, world.store, TrainingLimits(default_time_limit_s=600, max_time_limit_s=3600,
                                                                                          min_images_per_tag=5, stop_wait_s=0))
    return world


def script(text=b"def train(data_dir, output_dir, params):\n    pass\n"):
    return [Upload("train.py", io.BytesIO(text))]


def create(world, files=(), user=1, project=10, **fields):
    fields.setdefault("title", "colours")
    return world.core.create(user, project, "create", fields, list(files))


def test_create_records_a_pending_model_and_queues_its_training(training):
    model = create(training, script(), epochs="4", image_size="32", isPublic="true")
    assert model["status"] == "Pending" and model["labels"] == [] and model["url"] is None and model["error"] is None
    assert model["progress"] == {"epoch": 0, "epochs": 4, "metrics": {}}
    assert model["training"]["script"] is True and model["training"]["params"]["image_size"] == 32
    job = training.queue.get(f"model-{model['id']}")
    assert job.kind == "train_model" and job.payload["script_key"] == f"models/{model['id']}/train.py"
    assert job.payload["params"]["epochs"] == 4 and job.payload["params"]["time_limit_s"] == 600
    assert training.store.get_bytes(f"models/{model['id']}/train.py").startswith(b"def train(")


def test_without_a_script_the_recipe_trains(training):
    model = create(training)
    assert training.queue.get(f"model-{model['id']}").payload["script_key"] is None and model["training"]["script"] is False


@pytest.mark.parametrize("tags, message", [
    (["red"] * 9, "training needs images of at least two tags; the project has only the tag 'red'"),
    (["red"] * 5 + ["blue"] * 2, "each tag needs at least 5 images to train on; too few in 'blue' (2)"),
])
def test_too_few_tags_or_images_answer_400_and_record_nothing(training, tags, message):
    training.images.tags[10] = tags
    with pytest.raises(errors.InvalidArgument) as raised:
        create(training)
    assert str(raised.value.message) == message and raised.value.code == "not_enough_images"
    assert training.repository.docs == {} and training.queue.jobs == {}


def test_images_waiting_for_review_count_only_when_the_training_includes_them(training):
    training.images.tags[10] = ["red"] * 5 + ["blue"] * 2
    training.images.unchecked[10] = ["blue"] * 3
    with pytest.raises(errors.InvalidArgument) as raised:
        create(training)
    assert raised.value.message == ("each tag needs at least 5 images to train on; too few in 'blue' (2) (only checked "
                                    "images count: 3 wait for review; confirm them, or train with include_unchecked=true)")
    model = create(training, include_unchecked="true")
    assert training.queue.get(f"model-{model['id']}").payload["params"]["include_unchecked"] is True


@pytest.mark.parametrize("fields, files, error", [
    ({"epochs": "0"}, (), "field epochs must be between 1 and 500"),
    ({}, script() + script(), "at most one file"),
    ({}, script(b"  \n"), "the training script is empty"),
    ({}, script(b"\xff\xfe\x00bad"), "UTF-8"),
])
def test_bad_requests_answer_400(training, fields, files, error):
    with pytest.raises(errors.InvalidArgument, match=error):
        create(training, files, **fields)
    assert training.repository.docs == {}


def test_a_detection_project_cannot_train(training):
    with pytest.raises(errors.InvalidArgument, match="Classification"):
        create(training, project=11)


def test_without_the_image_service_training_is_not_available(world):
    with pytest.raises(errors.NotImplementedYet):
        create(world)


def test_status_follows_the_training_job(training):
    model_id = create(training)["id"]
    key = f"model-{model_id}"
    training.queue.set(key, status=jobs.RUNNING, progress={"done": 3, "total": 10, "metrics": {"accuracy": 0.8}})
    model = training.core.get(model_id, 1)
    assert model["status"] == "Training" and model["progress"] == {"epoch": 3, "epochs": 10, "metrics": {"accuracy": 0.8}}
    assert [m["status"] for m in training.core.list(1, 10)] == ["Training"]
    training.queue.set(key, status=jobs.FAILED, error="the training script failed: ValueError: bad")
    model = training.core.get(model_id, 1)
    assert (model["status"], model["error"]) == ("Failed", "the training script failed: ValueError: bad")
    # The script's (or TensorFlow's) error may name server files: only their names are shown.
    training.queue.set(key, status=jobs.FAILED, error="the training script failed: OSError: cannot open '/srv/data/training/model-1-ab/work/x.csv'")
    assert training.core.get(model_id, 1)["error"] == "the training script failed: OSError: cannot open 'x.csv'"


def test_a_trained_model_is_registered_and_served_like_an_upload(training, tmp_path):
    model_id = create(training)["id"]
    trained = tmp_path / "model.keras"
    trained.write_bytes(b"\x89HDF\r\n\x1a\n an h5 file")
    training.converter.input_shape = [64, 64, 3]
    registered = training.core.register_trained(model_id, trained, ["blue", "red"], {"accuracy": 1.0, "val_accuracy": 0.9})
    assert registered["status"] == "Trained" and registered["labels"] == ["blue", "red"] and registered["input_shape"] == [64, 64, 3]
    assert registered["metrics"] == {"accuracy": 1.0, "val_accuracy": 0.9}
    assert training.converter.calls[-1][2:] == ("Classification", "raw")
    assert training.tfserving.served == {f"model-{model_id}"}
    assert {f"models/{model_id}/labels.txt", f"models/{model_id}/v1/saved_model.tar.gz"} <= set(training.store.list_keys("models/"))
    assert training.store.get_bytes(f"models/{model_id}/labels.txt") == b"blue\nred"
    assert training.core.get(model_id, 1)["status"] == "Trained"


def test_abandoning_a_training_removes_its_served_copy_but_keeps_log_and_script(training, tmp_path):
    model_id = create(training, script())["id"]
    training.store.put_bytes(f"models/{model_id}/training.log", b"epoch 1")
    training.store.put_bytes(f"models/{model_id}/trained/model.keras", b"weights")
    training.core.abandon_training(model_id)
    assert training.store.list_keys("models/") == [f"models/{model_id}/train.py", f"models/{model_id}/training.log"]
    assert training.repository.docs[model_id]["status"] == "Pending"


def test_a_log_saved_after_the_model_was_deleted_is_removed_by_the_cleanup(training):
    model_id = create(training, script())["id"]
    training.core.delete(model_id, 1)
    training.store.put_bytes(f"models/{model_id}/training.log", b"last words")  # the trainer's final save
    training.core.abandon_training(model_id)
    assert training.store.list_keys("models/") == []


def test_a_model_deleted_during_registration_is_not_registered(training, tmp_path):
    model_id = create(training)["id"]
    training.repository.mark_deleting(model_id)
    trained = tmp_path / "model.keras"
    trained.write_bytes(b"weights")
    with pytest.raises(errors.NotFound):
        training.core.register_trained(model_id, trained, ["blue", "red"], {})
    assert training.tfserving.served == set()


def test_cancel_and_logs_are_for_the_owner_of_a_training(training):
    model_id = create(training, isPublic="true")["id"]
    training.store.put_bytes(f"models/{model_id}/training.log", b"Epoch 1/10\n")
    assert training.core.training_log(model_id, 1) == "Epoch 1/10\n"
    with pytest.raises(errors.NotFound):
        training.core.training_log(model_id, 2)
    with pytest.raises(errors.NotFound):
        training.core.cancel_training(model_id, 2)
    cancelled = training.core.cancel_training(model_id, 1)
    assert (cancelled["status"], cancelled["error"]) == ("Failed", "the training was cancelled")
    with pytest.raises(errors.NotAcceptable, match="not being trained"):
        training.core.cancel_training(model_id, 1)


def test_deleting_a_model_in_training_cancels_and_forgets_its_job(training):
    model_id = create(training, script())["id"]
    training.core.delete(model_id, 1)
    assert training.queue.jobs == {} and training.repository.docs == {} and training.store.list_keys("models/") == []


def as_user(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


def test_rest_create_logs_and_cancel(training):
    settings = settings_mod.load(ModelSettings, {"MONGO_URI": "mongodb://unused", "AUTH_REQUIRED": "true"})
    client = create_app(settings, training.core).test_client()
    created = client.post("/models/all?user_id=1&project_id=10&method=create", headers=as_user(1), content_type="multipart/form-data",
                          data={"title": "colours", "epochs": "3", "files": (io.BytesIO(b"def train(d, o, p): pass\n"), "train.py")})
    assert created.status_code == 201, created.get_json()
    model = created.get_json()
    assert model["status"] == "Pending" and model["progress"]["epochs"] == 3
    training.store.put_bytes(f"models/{model['id']}/training.log", b"hello from the script\n")
    logs = client.get(f"/models/{model['id']}/logs", headers=as_user(1))
    assert logs.status_code == 200 and logs.mimetype == "text/plain" and logs.get_data(as_text=True) == "hello from the script\n"
    assert client.get(f"/models/{model['id']}/logs", headers=as_user(2)).status_code == 404
    cancelled = client.post(f"/models/{model['id']}/cancel", headers=as_user(1))
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "Failed"
    again = client.post(f"/models/{model['id']}/cancel", headers=as_user(1))
    assert again.status_code == 406 and again.get_json()["code"] == "not_training"
    refused = client.post("/models/all?user_id=1&project_id=10&method=create", headers=as_user(1), content_type="multipart/form-data",
                          data={"title": "colours", "batch_size": "-1"})
    assert refused.status_code == 400 and refused.get_json()["code"] == "bad_training_parameter"


def test_a_trained_model_that_fails_later_shows_failed_not_training(training, tmp_path):
    model_id = create(training)["id"]
    trained = tmp_path / "model.keras"
    trained.write_bytes(b"\x89HDF\r\n\x1a\n an h5 file")
    training.core.register_trained(model_id, trained, ["blue", "red"], {"accuracy": 1.0})
    training.queue.set(f"model-{model_id}", status=jobs.DONE)
    assert training.core.get(model_id, 1)["status"] == "Trained"
    training.tfserving_repository.remove(f"model-{model_id}")  # lost from TF Serving and from storage:
    training.store.delete_prefix(f"models/{model_id}/")  # the service marks it Failed
    training.core.reconcile()
    model = training.core.get(model_id, 1)
    assert (model["status"], model["error"]) == ("Failed", "the served copy of this model was lost; upload it again")
    assert [m["status"] for m in training.core.list(1, 10)] == ["Failed"]


def recorded_without_job(training, files=(), age_s=600, **fields):
    """A model recorded by a request that stopped before queuing its training, `age_s` ago."""
    model_id = create(training, files, **fields)["id"]
    training.queue.jobs.clear()
    training.repository.docs[model_id]["create_time"] -= datetime.timedelta(seconds=age_s)
    return model_id


def test_reconcile_queues_a_training_recorded_without_its_job(training):
    model_id = recorded_without_job(training, script(), epochs="7")
    training.core.reconcile()
    job = training.queue.get(f"model-{model_id}")
    assert job.kind == "train_model" and job.status == jobs.QUEUED
    assert job.payload == {"model_id": model_id, "user_id": 1, "project_id": 10, "params": training.repository.docs[model_id]["training"]["params"],
                           "script_key": f"models/{model_id}/train.py", "preprocessing": "raw"}
    assert job.payload["params"]["epochs"] == 7 and job.progress == {"done": 0, "total": 7}
    assert training.core.get(model_id, 1)["status"] == "Pending"


def test_reconcile_fails_a_training_recorded_without_its_job_whose_script_was_lost(training):
    model_id = recorded_without_job(training, script())
    training.store.delete(f"models/{model_id}/train.py")
    training.core.reconcile()
    assert training.queue.jobs == {}
    model = training.core.get(model_id, 1)
    assert model["status"] == "Failed" and model["error"].startswith("the training was never started")


def test_reconcile_leaves_a_training_being_created_to_its_request(training):
    model_id = recorded_without_job(training, script(), age_s=1)
    training.core.reconcile()
    assert training.queue.jobs == {} and training.core.get(model_id, 1)["status"] == "Pending"
