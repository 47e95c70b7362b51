"""The MongoDB repository against a real, throwaway `mongod`: the queries, the indexes (the
unique partial index that makes frames idempotent), the tag summary aggregation, and deletes
that hide first. The core runs on it too, with a local-directory object store, to check that
storage and metadata agree after every kind of delete."""
import io
from types import SimpleNamespace

import pytest
from image_fakes import FakeProjects, image_bytes
from image_service.core import ImageCore, NewFrame, Page
from image_service.repository import ImageRepository
from image_service.uploads import UploadedFile, UploadLimits, check_bytes
from mlstudio.common import mongo
from mlstudio.common.media_urls import MediaSigner
from mlstudio.common.storage import LocalObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture
def repository(mongo_uri, request):
    db = mongo.connect(mongo_uri, f"images_{request.node.name[:40]}")
    db.client.drop_database(db.name)
    repo = ImageRepository(db)
    repo.ensure_indexes()
    return repo


@pytest.fixture
def core(repository, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    projects = FakeProjects({10: (1, "Classification"), 11: (1, "Detection"), 20: (2, "Classification")})
    return ImageCore(repository, store, projects, MediaSigner("k", "http://gw", 600), UploadLimits(1 << 20, 10, 1 << 20))


def upload(core, tag, count, project=10, user=1):
    files = [UploadedFile(f"{tag}{i}.png", io.BytesIO(image_bytes())) for i in range(count)]
    return core.upload(user, project, tag, files)


def frame(index, video=5, tag="cat"):
    return NewFrame(image_bytes("JPEG"), tag=tag, video_id=video, frame_index=index, timestamp_ms=index)


def test_the_indexes_the_queries_need_exist(repository):
    indexes = repository.images.index_information()
    assert indexes["project_tag_images"]["key"] == [("project", 1), ("tag", 1), ("_id", 1)]
    assert indexes["project_images"]["key"] == [("project", 1), ("_id", 1)]
    assert indexes["video_frames"]["unique"] is True
    assert indexes["video_frames"]["partialFilterExpression"] == {"video": {"$gt": 0}}


def test_list_tag_summary_rename_and_paging(core, repository):
    cats = upload(core, "cat", 3)
    upload(core, "dog", 2)
    upload(core, "cat", 1, project=20, user=2)
    assert [i["id"] for i in core.list_images(1, 10, tag="cat")] == [c["id"] for c in cats]
    assert [i["id"] for i in core.list_images(1, 10, page=Page(limit=2, offset=2))] == [cats[2]["id"], cats[2]["id"] + 1]
    summary = core.tag_summary(1, 10)
    assert [(row["name"], row["count"], row["avatarImage"]["id"]) for row in summary] == [("cat", 3, cats[0]["id"]), ("dog", 2, cats[2]["id"] + 1)]
    merged = core.rename_tag(1, 10, "dog", "cat")
    assert len(merged) == 5 and {i["type"] for i in merged} == {"cat"}
    assert core.list_images(2, 20, tag="cat")[0]["project"] == 20


def test_uploaded_images_never_collide_on_the_frame_index(core, repository):
    upload(core, "cat", 3)
    assert repository.images.count_documents({"video": None}) == 3


def test_frames_are_unique_per_video_and_frame_index(core, repository):
    first = core.create_frames(1, 10, [frame(0), frame(1)])
    again = core.create_frames(1, 10, [frame(1), frame(2)])
    assert again[0]["id"] == first[1]["id"]
    assert repository.images.count_documents({"video": 5}) == 3
    docs = [{**repository.get(first[0]["id"]), "_id": 9999}]
    assert repository.insert_frames(docs) == {9999}
    assert repository.images.count_documents({"video": 5}) == 3


def test_the_same_bytes_are_stored_once_per_project_even_when_uploads_race(core, repository):
    data = image_bytes()
    (first,) = core.upload(1, 10, "cat", [UploadedFile("a.png", io.BytesIO(data))])
    assert repository.images.index_information()["project_distinct_bytes"]["unique"] is True
    # A racing upload that looked before the first was stored: the index refuses its document.
    racer = {**repository.get(first["id"]), "_id": 9999, "key": "images/10/9999.png"}
    assert repository.insert_uploads([racer]) == {9999}
    (again,) = core.upload(1, 10, "dog", [UploadedFile("b.png", io.BytesIO(data))])
    assert again["id"] == first["id"] and repository.images.count_documents({"project": 10}) == 1
    assert objects(core, 10) == [first["location"]]


def test_existing_duplicates_and_identical_frames_do_not_break_the_index(core, repository):
    data = image_bytes()
    # Written before bytes were unique per project: two documents of the same bytes, no flag.
    old = {**core._create(SimpleNamespace(id=10, user_id=1, type="Classification"),
                          [check_bytes(data, "old.png", core.limits)], [{"tag": "cat"}], frames=True)[0][0]}
    repository.images.insert_one({**old, "_id": 7777, "key": "images/10/7777.png"})
    repository.images.drop_indexes()
    repository.ensure_indexes()
    frames = [NewFrame(data, tag="cat", video_id=5, frame_index=i) for i in (0, 1)]
    assert len({i["id"] for i in core.create_frames(1, 10, frames)}) == 2
    (uploaded,) = core.upload(1, 10, "cat", [UploadedFile("a.png", io.BytesIO(data))])
    assert uploaded["id"] == old["_id"]


def test_a_deleted_image_leaves_the_index_as_it_is_hidden(core, repository):
    data = image_bytes()
    (first,) = core.upload(1, 10, "cat", [UploadedFile("a.png", io.BytesIO(data))])
    repository.mark_deleting(image_id=first["id"])
    (again,) = core.upload(1, 10, "cat", [UploadedFile("a.png", io.BytesIO(data))])
    assert again["id"] != first["id"]


def test_by_video_is_in_frame_order(core):
    core.create_frames(1, 10, [frame(30), frame(10), frame(20)])
    assert [i["frame_index"] for i in core.list_images(1, 10, video_id=5)] == [10, 20, 30]


def objects(core, project):
    return core.store.list_keys(f"images/{project}/")


def test_storage_and_metadata_agree_after_every_delete(core, repository):
    a, b = upload(core, "cat", 2)
    upload(core, "dog", 2)
    core.create_frames(1, 10, [frame(0), frame(1)])
    other = upload(core, "cat", 1, project=20, user=2)

    def agree():
        keys = sorted(doc["key"] for doc in repository.images.find({"project": 10}))
        assert objects(core, 10) == keys
        return keys

    assert len(agree()) == 6
    core.delete_image(1, a["id"])
    assert len(agree()) == 5
    core.delete_tag(1, 10, "dog")
    assert len(agree()) == 3
    assert core.delete_by_video(5, 10) == 2
    assert agree() == [b["location"]]
    core.delete_all(1, 10)
    assert agree() == []
    assert objects(core, 20) == [other[0]["location"]]


def test_a_half_done_delete_is_hidden_and_swept(core, repository):
    upload(core, "cat", 2)
    repository.mark_deleting(project_id=10, tag="cat")
    assert core.list_images(1, 10) == []
    assert len(objects(core, 10)) == 2
    assert core.finish_pending_deletes() == 2
    assert objects(core, 10) == [] and repository.images.count_documents({}) == 0


def test_the_training_stream_reads_in_batches(core, repository):
    upload(core, "cat", 5)
    ids = [doc["_id"] for doc in repository.iterate(10, batch_size=2)]
    assert ids == sorted(ids) and len(ids) == 5


def profiled(repository, operation) -> list[dict]:
    """What `operation` asked MongoDB, from the database profiler: one entry per command, with
    how many documents and index keys it read."""
    db = repository.db
    db.command("profile", 0)
    db.system.profile.drop()
    db.command("profile", 2)
    try:
        operation()
    finally:
        db.command("profile", 0)
    return [entry for entry in db.system.profile.find({"ns": f"{db.name}.images"})]


def seed(repository, count: int, project=10, tags=("cat", "dog")) -> list[int]:
    """`count` image documents written straight to the collection (these tests are about reading)."""
    now = mongo.utc_now()
    ids = repository.reserve_ids(count)
    repository.images.insert_many([
        {"_id": image_id, "project": project, "user": 1, "tag": tags[n % len(tags)], "title": f"{n}.jpg", "description": "",
         "key": f"images/{project}/{image_id}.jpg", "content_type": "image/jpeg", "size": 1, "sha256": f"s{image_id}",
         "width": 1, "height": 1, "video": None, "frame_index": None, "timestamp_ms": None, "score": None,
         "detections": None, "is_train": True, "create_time": now} for n, image_id in enumerate(ids)])
    return ids


def test_tag_counts_come_from_the_index_and_only_each_tags_first_image_is_read(core, repository):
    ids = seed(repository, 300)
    # Being deleted: hidden from the counts; dog's oldest image among them, so its avatar is the next.
    repository.mark_deleting(image_id=ids[1])
    repository.mark_deleting(image_id=ids[4])
    summary = []
    entries = profiled(repository, lambda: summary.extend(core.tag_summary(1, 10)))
    assert [(row["name"], row["count"], row["avatarImage"]["id"]) for row in summary] == [("cat", 149, ids[0]), ("dog", 149, ids[3])]
    read = sum(entry.get("docsExamined", 0) for entry in entries)
    # The two tags' first images, the two being deleted and dog's next one: never the 300.
    assert read <= 6, [(entry.get("command"), entry.get("docsExamined")) for entry in entries]


def test_a_keyset_page_reads_only_its_own_entries(core, repository):
    ids = seed(repository, 300)
    page = []
    entries = profiled(repository, lambda: page.extend(core.list_images(1, 10, page=Page(limit=10, after_id=ids[250]))))
    assert [image["id"] for image in page] == ids[251:261]
    assert sum(entry.get("keysExamined", 0) for entry in entries) <= 11
    assert [image["id"] for image in core.list_images(1, 10, tag="dog", page=Page(after_id=ids[290]))] == ids[291::2]
def test_the_review_list_runs_on_its_index_lowest_score_first(core, repository):
    frames = core.create_frames(1, 10, [NewFrame(image_bytes("JPEG"), tag="cat", video_id=5, frame_index=i, score=score)
                                        for i, score in enumerate([0.7, 0.95, 0.2, 0.5])])
    old = upload(core, "cat", 1)[0]
    repository.images.update_one({"_id": old["id"]}, {"$unset": {"is_train": ""}})  # stored before the field existed
    ids = [f["id"] for f in frames]
    assert [d["_id"] for d in repository.list(project_id=10, review=True, by_score=True)] == [ids[2], ids[3], ids[0]]
    assert [d["_id"] for d in repository.list(project_id=10, review=True, by_score=True, limit=1, offset=1)] == [ids[3]]
    query = {"project": 10, "is_train": False, "deleting": {"$ne": True}}
    plan = repository.images.find(query).sort([("score", 1), ("_id", 1)]).explain()["queryPlanner"]["winningPlan"]
    assert "project_review" in str(plan) and "'SORT'" not in str(plan)  # the index gives the order: no in-memory sort
    assert repository.images.index_information()["project_scores"]["key"] == [("project", 1), ("score", 1), ("_id", 1)]


def test_a_label_change_is_one_update_and_a_gone_image_changes_nothing(core, repository):
    (image,) = core.create_frames(1, 10, [NewFrame(image_bytes("JPEG"), tag="cat", video_id=5, frame_index=0, score=0.1)])
    changed = repository.change_labels(image["id"], {"tag": "dog", "is_train": True})
    assert (changed["tag"], changed["is_train"], changed["score"]) == ("dog", True, 0.1)
    core.delete_image(1, image["id"])
    assert repository.change_labels(image["id"], {"is_train": False}) is None
