"""The model service's rules, through ModelCore with fakes (conftest.py)."""
import datetime
import io

import pytest
from PIL import Image

from mlstudio.common import errors
from model_service import archive
from model_service.uploads import Upload

H5_BYTES = b"\x89HDF\r\n\x1a\n" + b"\0" * 100
LABELS = b"{'light': 0, 'dark': 1}"


def files(model=H5_BYTES, labels=LABELS):
    return [Upload("model.h5", io.BytesIO(model)), Upload("classLabel.txt", io.BytesIO(labels))]


def upload(world, user=1, project=10, **fields):
    fields.setdefault("title", "light or dark")
    return world.core.create(user, project, "upload", fields, files(labels=fields.pop("labels", LABELS)))


def png(value, size=(40, 30)):
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, "PNG")
    return out.getvalue()


def store_keys(world):
    return world.store.list_keys("models/")


def test_upload_becomes_trained_served_and_stored(world):
    model = upload(world, description="mean pixel", preprocessing="unit", isPublic="true")
    assert model["status"] == "Trained"
    assert model["labels"] == ["light", "dark"] and model["input_shape"] == [32, 32, 3]
    assert model["preprocessing"] == "unit" and model["isPublic"] is True and model["version"] == 1
    assert model["type"] == "Classification" and model["user"] == 1 and model["project"] == 10
    assert model["location"] == "models/1/model.h5" and model["label_location"] == "models/1/labels.txt"
    assert model["url"].startswith("http://gateway.test/models/1/file?expires=")
    assert world.converter.calls == [("model.h5", "h5", "Classification", "unit")]
    assert world.tfserving.served == {"model-1"}
    assert world.tfserving_repository.has("model-1", 1)
    assert 'name: "model-1"' in world.tfserving_repository.config_file.read_text()
    assert store_keys(world) == ["models/1/labels.txt", "models/1/model.h5", "models/1/v1/saved_model.tar.gz"]
    assert world.store.get_bytes("models/1/model.h5") == H5_BYTES
    assert "claimed_until" not in world.repository.docs[1]


def test_label_count_must_match_the_model_output_and_nothing_is_left(world):
    with pytest.raises(errors.Unprocessable, match="names 3 classes but the model outputs 2"):
        upload(world, labels=b"a\nb\nc\n")
    assert world.repository.docs == {} and store_keys(world) == [] and world.tfserving.served == set()


def test_label_file_with_code_is_refused_before_conversion(world):
    with pytest.raises(errors.Unprocessable, match="label file"):
        upload(world, labels=b"{'light': __import__('os').system('echo hacked'), 'dark': 1}")
    assert world.converter.calls == [] and world.repository.docs == {}


def test_classification_labels_must_start_at_zero(world):
    with pytest.raises(errors.Unprocessable, match="start at 0"):
        upload(world, labels=b"{'light': 1, 'dark': 2}")


def test_unloadable_model_is_answered_422_and_rolled_back(world):
    world.converter.error = errors.Unprocessable("the file does not load as a Keras model")
    with pytest.raises(errors.Unprocessable, match="does not load"):
        upload(world)
    assert world.repository.docs == {} and store_keys(world) == []


def test_tf_serving_refusing_the_model_rolls_everything_back(world):
    world.tfserving.load_error = "bad graph"
    with pytest.raises(errors.Unprocessable, match="could not load the model: bad graph"):
        upload(world)
    assert world.repository.docs == {} and store_keys(world) == []
    assert world.tfserving.served == set() and not world.tfserving_repository.has("model-1", 1)


def test_an_exported_graph_that_reads_files_is_never_installed_and_leaves_nothing(world, computing_saved_model):
    # Whatever made it (an exporter bug, a Keras layer), the repository refuses it.
    world.converter.graph = lambda marker: computing_saved_model(marker, op="ReadFile")
    with pytest.raises(errors.Unprocessable, match="the model uses the operation ReadFile, which reads or writes files"):
        upload(world)
    assert world.repository.docs == {} and store_keys(world) == []
    assert world.tfserving.served == set() and not world.tfserving_repository.has("model-1", 1)


def test_a_stored_model_refused_by_the_graph_check_is_failed_not_restored(world, computing_saved_model):
    model = upload(world)
    world.tfserving_repository.remove("model-1")
    with world.serving.workspace() as workspace:  # as if kept before graphs were checked
        (workspace / "saved_model").mkdir()
        (workspace / "saved_model" / "saved_model.pb").write_bytes(computing_saved_model(op="WriteFile"))
        archive.pack_tree(workspace / "saved_model", workspace / "packed.tar.gz")
        world.store.put_bytes("models/1/v1/saved_model.tar.gz", (workspace / "packed.tar.gz").read_bytes())
    world.core.reconcile()
    failed = world.core.get(model["id"], 1)
    assert failed["status"] == "Failed" and "the operation WriteFile" in failed["error"]
    assert not world.tfserving_repository.has("model-1", 1) and world.tfserving.served == set()


def test_tf_serving_down_answers_503_and_leaves_nothing(world):
    world.tfserving.down = True
    with pytest.raises(errors.Unavailable):
        upload(world)
    assert world.repository.docs == {} and store_keys(world) == []
    assert not world.tfserving_repository.has("model-1", 1)
    assert 'model-1' not in world.tfserving_repository.config_file.read_text()


@pytest.mark.parametrize("method, error", [("create", errors.NotImplementedYet), ("train", errors.InvalidArgument), (None, errors.InvalidArgument)])
def test_methods_other_than_upload(world, method, error):
    with pytest.raises(error):
        world.core.create(1, 10, method, {"title": "t"}, files())


@pytest.mark.parametrize("fields, count, message", [
    ({}, 2, "title is required"),
    ({"title": "t", "type": "Detection"}, 2, "cannot belong to a Classification project"),
    ({"title": "t", "preprocessing": "imagenet"}, 2, "preprocessing"),
    ({"title": "t", "isPublic": "maybe"}, 2, "isPublic"),
    ({"title": "t"}, 1, "two files"),
])
def test_bad_upload_requests_answer_400(world, fields, count, message):
    with pytest.raises(errors.InvalidArgument, match=message):
        world.core.create(1, 10, "upload", fields, files()[:count])


def test_upload_to_someone_elses_project_is_404(world):
    with pytest.raises(errors.NotFound):
        world.core.create(2, 10, "upload", {"title": "t"}, files())


def test_model_file_over_the_limit_is_413(world):
    with pytest.raises(errors.PayloadTooLarge):
        world.core.create(1, 10, "upload", {"title": "t"}, files(model=H5_BYTES + b"\0" * (1 << 20)))
    assert world.repository.docs == {}


def test_unknown_file_type_is_415(world):
    with pytest.raises(errors.UnsupportedMediaType):
        world.core.create(1, 10, "upload", {"title": "t"}, files(model=b"print('hello')"))


def test_listing_rules(world):
    mine = upload(world, title="mine")
    other_private = upload(world, user=2, project=20, title="theirs private")
    other_public = upload(world, user=2, project=20, title="theirs public", isPublic="true")
    mine_detection = upload(world, project=11, title="detector", labels=b"bottle\n")
    listed = [m["id"] for m in world.core.list(1, 10)]
    assert listed == [mine["id"], other_public["id"]]
    assert [m["id"] for m in world.core.list(1, 11)] == [mine_detection["id"]]
    assert other_private["id"] not in [m["id"] for m in world.core.list(1, 10)]
    with pytest.raises(errors.NotFound):
        world.core.list(1, 20)


def test_reading_and_deleting_other_users_models(world):
    private = upload(world, user=2, project=20)
    public = upload(world, user=2, project=20, isPublic="true")
    with pytest.raises(errors.NotFound):
        world.core.get(private["id"], 1)
    assert world.core.get(public["id"], 1)["id"] == public["id"]
    with pytest.raises(errors.PermissionDenied):
        world.core.delete(public["id"], 1)
    with pytest.raises(errors.NotFound):
        world.core.classify(private["id"], 1, [png(255)])
    assert world.core.classify(public["id"], 1, [png(255)])[0].label == "light"


def test_delete_stops_serving_and_removes_files(world):
    model = upload(world)
    world.core.delete(model["id"], 1)
    assert world.repository.docs == {} and store_keys(world) == []
    assert world.tfserving.served == set()
    assert not (world.tfserving_repository.base / "model-1").exists()
    with pytest.raises(errors.NotFound):
        world.core.get(model["id"], 1)
    with pytest.raises(errors.NotFound):
        world.core.classify(model["id"], 1, [png(0)])


def test_delete_while_tf_serving_is_down_finishes_and_reapplies_later(world):
    model = upload(world)
    world.tfserving.down = True
    world.core.delete(model["id"], 1)
    assert world.repository.docs == {} and world.serving.dirty
    assert "model-1" not in world.tfserving_repository.config_file.read_text()
    world.tfserving.down = False
    world.core.reconcile()
    assert world.tfserving.served == set() and not world.serving.dirty


def test_classify_files_each_image_with_its_score(world):
    model = upload(world)
    results = world.core.classify(model["id"], 1, [png(255), png(0), png(204)])
    assert [r.label for r in results] == ["light", "dark", "light"]
    assert [round(r.score, 4) for r in results] == [1.0, 1.0, 0.8]


def test_classify_makes_one_predict_call_per_max_batch(world):
    model = upload(world)
    world.core.classify(model["id"], 1, [png(255)] * 10)
    assert [call[2] for call in world.tfserving.predict_calls] == [4, 4, 2]


def test_classify_stops_between_batches_once_its_caller_left(world):
    from mlstudio.common.deadlines import Deadline

    model = upload(world)
    calls = world.tfserving.predict_calls
    connected = {"yes": True}
    original = world.tfserving.predict

    def predict_then_hang_up(*args, **kwargs):
        connected["yes"] = False  # the caller (the image service) cancels during the first Predict
        return original(*args, **kwargs)

    world.tfserving.predict = predict_then_hang_up
    with pytest.raises(errors.DeadlineExceeded):
        world.core.classify(model["id"], 1, [png(255)] * 10, Deadline(None, gone=lambda: not connected["yes"]))
    assert [call[2] for call in calls] == [4]  # no second batch for nobody


def test_detect_answers_boxes_in_original_pixels(world):
    model = upload(world, project=11, labels=b"bottle\ncan\n")
    found = world.core.detect(model["id"], 1, [png(255, (200, 100)), png(0, (200, 100))])
    assert len(world.tfserving.predict_calls) == 1
    assert [(d.label, round(d.score, 3)) for d in found[0]] == [("bottle", 1.0)]
    assert [found[0][0].x1, found[0][0].y1, found[0][0].x2, found[0][0].y2] == pytest.approx([20, 25, 100, 75])
    assert found[1] == []
    low = world.core.detect(model["id"], 1, [png(0, (200, 100))], threshold=0.05)
    assert [d.label for d in low[0]] == ["can"]


def test_models_are_used_for_their_own_type_only(world):
    classifier = upload(world)
    detector = upload(world, project=11, labels=b"bottle\n")
    with pytest.raises(errors.InvalidArgument, match="use Classify"):
        world.core.detect(classifier["id"], 1, [png(0)])
    with pytest.raises(errors.InvalidArgument, match="use Detect"):
        world.core.classify(detector["id"], 1, [png(0)])
    with pytest.raises(errors.InvalidArgument, match="threshold"):
        world.core.detect(detector["id"], 1, [png(0)], threshold=1.5)


def test_models_not_trained_are_not_used(world):
    model = upload(world)
    world.repository.docs[model["id"]]["status"] = "Pending"
    with pytest.raises(errors.NotAcceptable):
        world.core.classify(model["id"], 1, [png(0)])


def test_undecodable_image_is_422(world):
    model = upload(world)
    with pytest.raises(errors.Unprocessable, match="image 2 cannot be decoded"):
        world.core.classify(model["id"], 1, [png(0), b"not an image"])


def test_reconcile_restores_a_missing_saved_model_from_storage(world):
    model = upload(world)
    served_bytes = (world.tfserving_repository.version_dir("model-1", 1) / "saved_model.pb").read_bytes()
    world.tfserving_repository.remove("model-1")
    world.core.reconcile()
    assert (world.tfserving_repository.version_dir("model-1", 1) / "saved_model.pb").read_bytes() == served_bytes
    assert world.tfserving.configs[-1].model_config_list.config[0].name == "model-1"
    assert world.core.classify(model["id"], 1, [png(255)])[0].label == "light"


def test_reconcile_fails_a_model_whose_artifacts_are_lost(world):
    model = upload(world)
    world.tfserving_repository.remove("model-1")
    world.store.delete_prefix("models/1/")
    world.core.reconcile()
    assert world.core.get(model["id"], 1)["status"] == "Failed"
    assert world.tfserving.served == set()


def test_reconcile_removes_abandoned_registrations(world):
    model = upload(world)
    world.repository.docs[model["id"]].update(status="Pending", claimed_until=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc))
    world.core.reconcile()
    assert world.repository.docs == {} and store_keys(world) == [] and world.tfserving.served == set()


def test_delete_project_data_removes_every_model_of_the_project(world):
    upload(world)
    upload(world, isPublic="true")
    kept = upload(world, user=2, project=20)
    assert world.core.delete_project_data(10) == 2
    assert list(world.repository.docs) == [kept["id"]]
    assert store_keys(world) == [f"models/{kept['id']}/{name}" for name in ("labels.txt", "model.h5", "v1/saved_model.tar.gz")]
    assert world.core.delete_project_data(10) == 0


def test_model_file_needs_a_valid_signature(world):
    model = upload(world)
    query = dict(part.split("=") for part in model["url"].split("?")[1].split("&"))
    media = world.core.model_file(model["id"], query["expires"], query["signature"])
    assert b"".join(world.core.read_model_file(media)) == H5_BYTES
    assert (media.size, media.download_name) == (len(H5_BYTES), "model-1.h5")
    assert b"".join(world.core.read_model_file(media, 2, 3)) == H5_BYTES[2:5]
    with pytest.raises(errors.PermissionDenied):
        world.core.model_file(model["id"], query["expires"], "0" * 64)



def test_one_broken_served_model_neither_blocks_uploads_nor_the_config(world):
    broken = upload(world, title="breaks later")
    world.tfserving.broken.add(f"model-{broken['id']}")
    fine = upload(world, title="fine")
    assert fine["status"] == "Trained"
    world.serving.dirty = True
    world.core.reconcile()
    assert world.core.get(broken["id"], 1)["status"] == "Failed"
    assert "cannot load" in world.core.get(broken["id"], 1)["error"]
    assert world.tfserving.served == {f"model-{fine['id']}"} and not world.serving.dirty


def test_a_model_deleted_during_its_own_upload_answers_404_and_leaves_nothing(world):
    served = world.tfserving.wait_available

    def deleted_meanwhile(name, version, timeout_s):
        served(name, version, timeout_s)
        world.core.delete(int(name.removeprefix("model-")), 1)  # its owner deletes it as TF Serving loads it

    world.tfserving.wait_available = deleted_meanwhile
    with pytest.raises(errors.NotFound, match="deleted while it was being registered"):
        upload(world)
    assert world.repository.docs == {} and store_keys(world) == [] and world.tfserving.served == set()
    assert not (world.tfserving_repository.base / "model-1").exists()


def fail_once(world, monkeypatch, name, error):
    """Makes the object store's `name` raise `error` (a backend's own, unmapped) once."""
    real = getattr(world.store, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(world.store, name, failing)
    return calls


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), errors.Unavailable("object storage is unavailable")])
def test_a_delete_that_storage_interrupts_is_hidden_at_once_and_finished_by_reconcile(world, monkeypatch, error):
    model = upload(world)
    fail_once(world, monkeypatch, "delete_prefix", error)
    world.core.delete(model["id"], 1)  # answered: the model is gone for its owner
    with pytest.raises(errors.NotFound):
        world.core.get(model["id"], 1)
    assert world.repository.docs[model["id"]]["deleting"] and store_keys(world)
    world.core.reconcile()
    assert world.repository.docs == {} and store_keys(world) == [] and world.tfserving.served == set()


def test_a_delete_the_database_refuses_is_answered_503_and_changes_nothing(world, monkeypatch):
    model = upload(world)

    def database_down(model_id):
        raise errors.Unavailable("the database is unavailable, try again shortly")

    monkeypatch.setattr(world.repository, "mark_deleting", database_down)
    with pytest.raises(errors.Unavailable):
        world.core.delete(model["id"], 1)
    assert world.core.get(model["id"], 1)["status"] == "Trained" and len(store_keys(world)) == 3


def test_delete_project_data_turns_a_storage_failure_into_a_retryable_error(world, monkeypatch):
    upload(world)
    fail_once(world, monkeypatch, "delete_prefix", OSError(5, "Input/output error", "/srv/data/objects/models/1/model.h5"))
    with pytest.raises(errors.Unavailable, match="not removed yet") as caught:
        world.core.delete_project_data(10)
    assert "/srv" not in caught.value.message and "model.h5" in caught.value.message
    assert world.core.delete_project_data(10) == 1
    assert world.repository.docs == {} and store_keys(world) == []
