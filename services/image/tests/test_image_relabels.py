"""Re-labelling a project's images with a model, against a real, throwaway `mongod` (the job queue
and the conditional writes are MongoDB's) and a fake model service: only a model's labels
change, never a person's, even one checked while the job runs; progress, scopes, cancel and bad
requests."""
import io

import pytest
from image_fakes import FakeModels, FakeProjects, image_bytes
from image_service.core import ImageCore, LabelChanges, NewFrame, Selection
from image_service.relabels import RelabelCore, RelabelJob
from image_service.repository import ImageRepository, RelabelRepository
from image_service.uploads import UploadedFile, UploadLimits
from mlstudio.common import errors, jobs, mongo
from mlstudio.common.media_urls import MediaSigner
from mlstudio.common.storage import LocalObjectStore

pytestmark = pytest.mark.integration

CLASSIFICATION, DETECTION = 10, 11


class Studio:
    def __init__(self, db, root):
        self.repository = ImageRepository(db)
        self.repository.ensure_indexes()
        self.models = FakeModels({7: {"user": 1, "type": "Classification"}, 8: {"user": 1, "type": "Detection"},
                                  9: {"user": 2, "type": "Classification"}})
        projects = FakeProjects({CLASSIFICATION: (1, "Classification"), DETECTION: (1, "Detection")})
        self.core = ImageCore(self.repository, LocalObjectStore(root), projects, MediaSigner("k", "http://gw", 600),
                              UploadLimits(1 << 20, 100, 1 << 20), models=self.models)
        records = RelabelRepository(db)
        records.ensure_indexes()
        self.queue = jobs.JobQueue(db.dataset_jobs, lease_s=30)
        self.queue.ensure_indexes()
        self.relabels = RelabelCore(self.core, records, self.queue, ttl_s=3600)
        self.worker = jobs.Worker(self.queue, {"relabel": RelabelJob(self.core, self.repository, records)}, owner="test")

    def run(self, project=CLASSIFICATION, **body):
        created = self.relabels.create(1, project, {"model_id": 7 if project == CLASSIFICATION else 8, **body})
        assert created["status"] == "queued"
        assert self.worker.run_once()
        return self.relabels.get(1, project, created["id"])

    def labels(self, project=CLASSIFICATION):
        return {i["id"]: (i["type"], i["score"], i["isTrain"]) for i in self.core.list_images(1, project)}


@pytest.fixture
def studio(mongo_uri, request, tmp_path):
    db = mongo.connect(mongo_uri, f"relabels_{request.node.name[:40]}")
    db.client.drop_database(db.name)
    return Studio(db, tmp_path / "objects")


def frames(studio, scores, tag="cat"):
    return studio.core.create_frames(1, CLASSIFICATION, [NewFrame(image_bytes("JPEG"), tag=tag, video_id=5, frame_index=n, score=s)
                                                         for n, s in enumerate(scores)])


def test_only_the_images_waiting_for_review_change_and_progress_says_so(studio):
    (uploaded,) = studio.core.upload(1, CLASSIFICATION, "cat", [UploadedFile("a.png", io.BytesIO(image_bytes()))])
    sure, unsure, confirmed = frames(studio, [0.95, 0.3, 0.4])
    studio.core.change_labels(1, confirmed["id"], LabelChanges(checked=True))
    before = studio.labels()
    studio.models.labels = [("Dog", 0.91)]
    run = studio.run()
    assert (run["status"], run["progress"], run["changed"], run["scope"]) == ("done", {"done": 1, "total": 1}, 1, "review")
    after = studio.labels()
    assert after[unsure["id"]] == ("dog", 0.91, True)  # the better model is sure: checked by the threshold
    assert {i: after[i] for i in (uploaded["id"], sure["id"], confirmed["id"])} == {
        i: before[i] for i in (uploaded["id"], sure["id"], confirmed["id"])}
    assert studio.models.calls == [("classify", 1)]


def test_scope_all_also_takes_the_model_labels_the_threshold_checked_but_never_a_persons(studio):
    sure, unsure, retagged = frames(studio, [0.95, 0.3, 0.4])
    studio.core.retag(1, retagged["id"], "bird")
    studio.models.labels = [("dog", 0.5), ("dog", 0.6)]
    run = studio.run(scope="all")
    assert (run["changed"], run["progress"]["total"]) == (2, 2)
    after = studio.labels()
    assert (after[sure["id"]], after[unsure["id"]], after[retagged["id"]]) == (("dog", 0.5, False), ("dog", 0.6, False),
                                                                              ("bird", 0.4, True))
    assert [i["id"] for i in studio.core.list_images(1, CLASSIFICATION, selection=Selection(review=True, by_score=True))] == [
        sure["id"], unsure["id"]]


def test_a_person_who_checks_an_image_while_the_job_runs_wins(studio):
    first, second = frames(studio, [0.1, 0.2])
    studio.models.labels = [("dog", 0.99), ("dog", 0.99)]
    # While the model works, a person confirms the second image.
    studio.models.during_call = lambda: studio.core.change_labels(1, second["id"], LabelChanges(checked=True))
    run = studio.run()
    assert run["changed"] == 1
    after = studio.labels()
    assert after[first["id"]] == ("dog", 0.99, True) and after[second["id"]] == ("cat", 0.2, True)


def test_a_tag_or_a_video_narrows_the_run(studio):
    cat, dog = frames(studio, [0.1, 0.2])
    studio.core.retag(1, dog["id"], "dog")
    studio.core.change_labels(1, dog["id"], LabelChanges(checked=False))  # back to review, but a person's label now
    studio.models.labels = [("bird", 0.3)]
    assert studio.run(tag="cat")["changed"] == 1 and studio.labels()[dog["id"]][0] == "dog"
    assert studio.run(video_id=99)["progress"] == {"done": 0, "total": 0}


def test_detection_frames_get_the_new_models_boxes(studio):
    (frame,) = studio.core.create_frames(1, DETECTION, [NewFrame(image_bytes("JPEG"), video_id=6, frame_index=0)])
    assert frame["isTrain"] is False
    studio.models.boxes = [[("car", 0.93, 1, 1, 4, 4)]]
    assert studio.run(DETECTION, threshold=0.5)["changed"] == 1
    image = studio.core.get(1, frame["id"])
    assert (image["captions"], image["boxes"], image["score"], image["isTrain"]) == (",car 0.930", ",[1 1 4 4]", 0.93, True)
    assert studio.models.threshold == 0.5


def test_a_cancelled_run_stops_and_says_so(studio):
    frames(studio, [0.1])
    created = studio.relabels.create(1, CLASSIFICATION, {"model_id": 7})
    cancelled = studio.relabels.cancel(1, CLASSIFICATION, created["id"])
    assert cancelled["status"] == "cancelled"
    studio.worker.run_once()
    assert studio.relabels.get(1, CLASSIFICATION, created["id"])["status"] == "cancelled" and studio.models.calls == []
    with pytest.raises(errors.NotAcceptable):
        studio.relabels.cancel(1, CLASSIFICATION, created["id"])


@pytest.mark.parametrize("body, problem", [
    ({}, "model_id must be"),
    ({"model_id": 7, "scope": "everything"}, "scope must be one of review, all"),
    ({"model_id": 7, "colour": 1}, "unknown fields ['colour']"),
    ({"model_id": 7, "tag": "all"}, "invalid tag"),
    ({"model_id": 7, "threshold": 2}, "threshold must be a number in (0, 1]"),
    ({"model_id": 8}, "model 8 is a Detection model"),
])
def test_bad_requests_are_refused_and_queue_nothing(studio, body, problem):
    with pytest.raises(errors.InvalidArgument) as raised:
        studio.relabels.create(1, CLASSIFICATION, body)
    assert problem in raised.value.message
    assert studio.relabels.list(1, CLASSIFICATION) == []


def test_another_users_model_or_project_is_not_found(studio):
    with pytest.raises(errors.NotFound):
        studio.relabels.create(1, CLASSIFICATION, {"model_id": 9})
    with pytest.raises(errors.NotFound):
        studio.relabels.create(2, CLASSIFICATION, {"model_id": 7})


def test_progress_and_the_changes_so_far_show_while_it_runs(studio):
    frames(studio, [0.1] * 33)  # two batches: 32, then 1
    studio.models.labels = [("dog", 0.5)] * 33
    created = studio.relabels.create(1, CLASSIFICATION, {"model_id": 7})
    seen = []
    studio.models.during_call = lambda: seen.append(studio.relabels.get(1, CLASSIFICATION, created["id"]))
    assert studio.worker.run_once()
    assert [(s["status"], s["progress"], s["changed"]) for s in seen] == [
        ("running", {"done": 0, "total": 33}, 0), ("running", {"done": 32, "total": 33}, 32)]
    assert studio.relabels.get(1, CLASSIFICATION, created["id"])["changed"] == 33
