"""Dataset exports and imports against a real, throwaway `mongod` and a local-directory store.

Exports: the job writes a zip that the formats' own readers open (pycocotools for COCO, Keras'
`image_dataset_from_directory` for ImageNet folders, YOLO's and VOC's text and XML), with boxes
equal to the API's; splits are stratified and reproducible; bad requests are refused; a failed
export leaves no zip; expired exports are swept.
Imports: every format exported and imported into a new project gives the same images, tags,
boxes and checked states; a foreign zip (no `labels.csv`) gives the boxes of its own files;
hostile archives are refused with a 4xx and leave nothing behind; the report says what was
skipped and why."""
import csv
import io
import zipfile
from xml.etree import ElementTree

import pytest
import yaml
from image_fakes import FakeProjects, image_bytes
from image_service.archive_checks import ArchiveLimits
from image_service.core import ImageCore, NewFrame
from image_service.exports import ExportCore, ExportJob
from image_service.imports import ImportCore, ImportJob
from image_service.repository import ExportRepository, ImageRepository, ImportRepository
from image_service.uploads import UploadedFile, UploadLimits
from mlstudio.common import errors, jobs, mongo
from mlstudio.common.media_urls import MediaSigner
from mlstudio.common.storage import LocalObjectStore

pytestmark = pytest.mark.integration

CLASSIFICATION, DETECTION = 10, 11
NEW_CLASSIFICATION, NEW_DETECTION = 12, 13


class Studio:
    """The image core, the export core and one worker, on one database and one store."""

    def __init__(self, db, root):
        self.repository = ImageRepository(db)
        self.repository.ensure_indexes()
        self.store = LocalObjectStore(root)
        signer = MediaSigner("k", "http://gw", 600)
        projects = FakeProjects({CLASSIFICATION: (1, "Classification"), DETECTION: (1, "Detection"), 20: (2, "Classification"),
                                 NEW_CLASSIFICATION: (1, "Classification"), NEW_DETECTION: (1, "Detection")})
        self.core = ImageCore(self.repository, self.store, projects, signer, UploadLimits(1 << 20, 100, 1 << 20))
        self.export_repository = ExportRepository(db)
        self.export_repository.ensure_indexes()
        self.queue = jobs.JobQueue(db.dataset_jobs, lease_s=30)
        self.queue.ensure_indexes()
        self.exports = ExportCore(self.core, self.export_repository, self.queue, self.store, signer, ttl_s=3600)
        self.import_repository = ImportRepository(db)
        self.import_repository.ensure_indexes()
        limits = ArchiveLimits(max_entries=200, max_total_bytes=50 << 20)
        self.imports = ImportCore(self.core, self.import_repository, self.queue, self.store, limits,
                                  max_annotation_bytes=1 << 20, ttl_s=3600)
        handlers = {"export": ExportJob(self.repository, self.export_repository, self.store, ttl_s=3600),
                    "import": ImportJob(self.core, self.import_repository, self.store, limits, max_annotation_bytes=1 << 20)}
        self.worker = jobs.Worker(self.queue, handlers, owner="test")

    def export(self, project, **body):
        created = self.exports.create(1, project, body)
        assert created["status"] == "queued" and created["url"] is None
        assert self.worker.run_once()
        return self.exports.get(1, project, created["id"])

    def zip_bytes(self, export) -> bytes:
        assert export["status"] == "done", export["error"]
        return self.store.get_bytes(self.export_repository.get(export["id"])["key"])

    def archive(self, export) -> zipfile.ZipFile:
        return zipfile.ZipFile(io.BytesIO(self.zip_bytes(export)))

    def import_zip(self, project, data: bytes, name="dataset.zip"):
        created = self.imports.create(1, project, UploadedFile(name, io.BytesIO(data)))
        assert created["status"] == "queued"
        assert self.worker.run_once()
        return self.imports.get(1, project, created["id"])

    def stored(self, project) -> dict[str, tuple]:
        """What a person sees of each image, by its bytes' SHA-256."""
        return {doc["sha256"]: (doc["tag"], doc.get("is_train", True),
                                sorted((d["label"], *d["box"]) for d in doc["detections"]) if doc.get("detections") is not None else None)
                for doc in self.repository.images.find({"project": project})}


@pytest.fixture
def studio(mongo_uri, request, tmp_path):
    db = mongo.connect(mongo_uri, f"exports_{request.node.name[:40]}")
    db.client.drop_database(db.name)
    return Studio(db, tmp_path / "objects")


def classified(studio, counts: dict[str, int]) -> list[dict]:
    images = []
    for tag, count in counts.items():
        files = [UploadedFile(f"{tag}{i}.png", io.BytesIO(image_bytes(size=(32, 24)))) for i in range(count)]
        images += studio.core.upload(1, CLASSIFICATION, tag, files)
    return images


def detected(studio) -> list[dict]:
    boxes = [
        [{"label": "car", "score": 0.9, "box": [1.5, 2.0, 20.0, 15.25]}, {"label": "person", "score": 0.7, "box": [3, 4, 9, 22]}],
        [{"label": "person", "score": 0.8, "box": [0, 0, 31, 23]}],
        [],
        [{"label": "car", "score": 0.6, "box": [10, 10, 12, 12]}],
    ]
    colors = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]  # JPEG makes close colours the same bytes
    # Checked (as a person's boxes would be): one box scores under the review threshold, which
    # would put its image in the `unchecked` split.
    frames = [NewFrame(image_bytes("JPEG", size=(32, 24), color=color), tag="street" if not found else "", detections=found,
                       title=f"{n}.jpg", is_train=True) for n, (found, color) in enumerate(zip(boxes, colors))]
    return studio.core.create_frames(1, DETECTION, frames)


def boxes_by_image(images) -> dict[int, list[tuple]]:
    return {image["id"]: sorted((d["label"], *map(float, d["box"])) for d in image["detections"]) for image in images}


def test_coco_opens_with_pycocotools_and_its_boxes_match_the_api(studio, tmp_path):
    from pycocotools.coco import COCO

    images = detected(studio)
    export = studio.export(DETECTION, format="coco")
    assert export["count"] == 4 and export["url"].startswith(f"http://gw/projects/{DETECTION}/exports/{export['id']}/file?")
    archive = studio.archive(export)
    archive.extractall(tmp_path / "coco")
    coco = COCO(str(tmp_path / "coco" / "annotations" / "instances_train.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert sorted(names.values()) == ["car", "person"]
    found = {}
    for image in coco.loadImgs(coco.getImgIds()):
        assert (tmp_path / "coco" / "images" / "train" / image["file_name"]).is_file()
        x_y_w_h = [(names[a["category_id"]], *a["bbox"]) for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))]
        found[image["id"]] = sorted((label, x, y, x + w, y + h) for label, x, y, w, h in x_y_w_h)
    assert found == boxes_by_image(images)


def test_imagenet_folders_train_with_keras_as_they_are(studio, tmp_path):
    import keras

    classified(studio, {"cat": 6, "dog": 4})
    export = studio.export(CLASSIFICATION, format="imagenet", val_fraction=0.25, seed=7)
    assert export["splits"] == {"train": 7, "val": 3}
    studio.archive(export).extractall(tmp_path / "data")
    train = keras.utils.image_dataset_from_directory(tmp_path / "data" / "train", image_size=(24, 32), batch_size=4)
    assert train.class_names == ["cat", "dog"]
    assert sum(int(batch.shape[0]) for batch, _ in train) == 7
    val = keras.utils.image_dataset_from_directory(tmp_path / "data" / "val", image_size=(24, 32), batch_size=4)
    assert sum(int(batch.shape[0]) for batch, _ in val) == 3
    model = keras.Sequential([keras.Input((24, 32, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, validation_data=val, epochs=1, verbose=0, shuffle=False)  # the folders as they are
    assert {"loss", "val_loss"} <= set(history.history)


def test_yolo_and_voc_hold_the_api_boxes_in_their_own_forms(studio):
    images = detected(studio)
    by_id = {image["id"]: image for image in images}
    yolo = studio.archive(studio.export(DETECTION, format="yolo"))
    described = yaml.safe_load(yolo.read("data.yaml"))
    names = described["names"]
    assert described["train"] == "images/train" and described["nc"] == len(names) == 2
    for image_id, image in by_id.items():
        assert f"images/train/{image_id}.jpg" in yolo.namelist()
        rows = [line.split() for line in yolo.read(f"labels/train/{image_id}.txt").decode().splitlines()]
        got = sorted((names[int(c)], *(round(v, 3) for v in ((float(cx) - float(w) / 2) * 32, (float(cy) - float(h) / 2) * 24,
                                                              (float(cx) + float(w) / 2) * 32, (float(cy) + float(h) / 2) * 24)))
                     for c, cx, cy, w, h in rows)
        assert got == boxes_by_image([image])[image_id]

    voc = studio.archive(studio.export(DETECTION, format="voc"))
    assert sorted(voc.read("ImageSets/Main/train.txt").decode().split()) == sorted(str(i) for i in by_id)
    for image_id, image in by_id.items():
        root = ElementTree.fromstring(voc.read(f"Annotations/{image_id}.xml"))
        assert root.findtext("filename") == f"{image_id}.jpg" and root.findtext("size/width") == "32"
        got = sorted((o.findtext("name"), *(float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")))
                     for o in root.iter("object"))
        assert got == boxes_by_image([image])[image_id]


def test_splits_are_stratified_reproducible_and_follow_the_checked_state(studio):
    images = classified(studio, {"cat": 10, "dog": 5})
    studio.repository.images.update_many({"_id": {"$in": [images[0]["id"], images[10]["id"]]}}, {"$set": {"is_train": False}})

    def splits(**body):
        archive = studio.archive(studio.export(CLASSIFICATION, format="csv", **body))
        return {int(row["id"]): (row["split"], row["tag"]) for row in csv.DictReader(io.TextIOWrapper(archive.open("labels.csv")))}

    first = splits(val_fraction=0.3, seed=1)
    assert first == splits(val_fraction=0.3, seed=1)
    assert first != splits(val_fraction=0.3, seed=2)
    counted = {}
    for split, tag in first.values():
        counted[(tag, split)] = counted.get((tag, split), 0) + 1
    assert counted == {("cat", "train"): 6, ("cat", "val"): 3, ("cat", "unchecked"): 1,
                       ("dog", "train"): 3, ("dog", "val"): 1, ("dog", "unchecked"): 1}
    only = splits(checked_only=True, tag="Dog")
    assert sorted(only) == sorted(i["id"] for i in images[11:]) and {s for s, _ in only.values()} == {"train"}


def test_bad_requests_are_refused_and_nothing_is_queued(studio):
    classified(studio, {"cat": 1})
    for body, code in [({"format": "coco"}, "invalid_format"), ({"format": "tar"}, "invalid_format"),
                       ({"format": "csv", "val_fraction": 1}, "invalid_body"), ({"format": "csv", "seed": -1}, "invalid_body"),
                       ({"format": "csv", "tag": "all"}, "invalid_tag"), ({"format": "csv", "extra": 1}, "invalid_body")]:
        with pytest.raises(errors.InvalidArgument) as caught:
            studio.exports.create(1, CLASSIFICATION, body)
        assert caught.value.code == code, body
    with pytest.raises(errors.NotFound):
        studio.exports.create(2, CLASSIFICATION, {"format": "csv"})
    assert studio.queue.jobs.count_documents({}) == 0 and studio.exports.list(1, CLASSIFICATION) == []


def test_a_failed_export_leaves_no_zip_and_an_expired_one_is_swept(studio, monkeypatch):
    classified(studio, {"cat": 3})
    real = studio.store.read_range
    calls = []

    def failing(key, *args, **kwargs):
        calls.append(key)
        if len(calls) == 2:
            raise errors.Unprocessable("disk trouble")
        return real(key, *args, **kwargs)

    monkeypatch.setattr(studio.store, "read_range", failing)
    failed = studio.export(CLASSIFICATION, format="imagenet")
    assert failed["status"] == "failed" and "disk trouble" in failed["error"] and failed["url"] is None
    assert studio.store.list_keys("exports/") == []
    monkeypatch.setattr(studio.store, "read_range", real)

    done = studio.export(CLASSIFICATION, format="imagenet")
    assert studio.store.list_keys("exports/") == [f"exports/{CLASSIFICATION}/{done['id']}.zip"]
    media = studio.exports.media(CLASSIFICATION, done["id"], *_signed(done["url"]))
    assert media.size == done["size"] and media.content_type == "application/zip"
    studio.export_repository.records.update_many({}, {"$set": {"expires_at": mongo.utc_now().replace(year=2000)}})
    assert studio.exports.sweep_expired() == 2
    assert studio.store.list_keys("exports/") == [] and studio.exports.list(1, CLASSIFICATION) == []
    assert studio.queue.jobs.count_documents({}) == 0


def _signed(url: str) -> tuple[str, str]:
    import urllib.parse

    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    return query["expires"][0], query["signature"][0]


# ---- imports -----------------------------------------------------------------------------------

def without_manifest(data: bytes) -> bytes:
    """The same zip without the studio's `labels.csv`: as another tool would write it."""
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename != "labels.csv":
                target.writestr(info, source.read(info))
    return out.getvalue()


@pytest.mark.parametrize("chosen", ["coco", "yolo", "voc", "imagenet", "csv"])
def test_a_detection_export_imports_back_unchanged(studio, chosen):
    detected(studio)
    studio.repository.images.update_one({"detections": []}, {"$set": {"is_train": False}})
    data = studio.zip_bytes(studio.export(DETECTION, format=chosen, val_fraction=0.3, seed=5))
    imported = studio.import_zip(NEW_DETECTION, data)
    assert imported["status"] == "done" and imported["format"] == chosen, imported
    assert imported["report"] == {"imported": 4, "existing": 0, "skipped_count": 0, "skipped": []}
    assert imported["progress"] == {"done": 4, "total": 4}
    expected = studio.stored(DETECTION)
    if chosen == "imagenet":  # folders carry tags, not boxes
        expected = {sha: (tag, checked, []) for sha, (tag, checked, _) in expected.items()}
    assert studio.stored(NEW_DETECTION) == expected
    assert studio.store.list_keys("imports/") == []


@pytest.mark.parametrize("chosen", ["imagenet", "csv"])
def test_a_classification_export_imports_back_unchanged(studio, chosen):
    images = classified(studio, {"cat": 4, "dog": 3})
    studio.repository.images.update_one({"_id": images[0]["id"]}, {"$set": {"is_train": False}})
    data = studio.zip_bytes(studio.export(CLASSIFICATION, format=chosen, val_fraction=0.3))
    imported = studio.import_zip(NEW_CLASSIFICATION, data)
    assert imported["report"]["imported"] == 7 and imported["format"] == chosen
    assert studio.stored(NEW_CLASSIFICATION) == studio.stored(CLASSIFICATION)


@pytest.mark.parametrize("chosen", ["coco", "yolo", "voc"])
def test_a_foreign_zip_gives_the_boxes_of_its_own_files(studio, chosen):
    detected(studio)
    data = without_manifest(studio.zip_bytes(studio.export(DETECTION, format=chosen)))
    imported = studio.import_zip(NEW_DETECTION, data)
    assert imported["report"]["imported"] == 4, imported
    boxes = {sha: found for sha, (_, _, found) in studio.stored(NEW_DETECTION).items()}
    assert boxes == {sha: found for sha, (_, _, found) in studio.stored(DETECTION).items()}


def test_importing_the_same_zip_again_stores_nothing_twice(studio):
    classified(studio, {"cat": 3})
    data = studio.zip_bytes(studio.export(CLASSIFICATION, format="imagenet"))
    assert studio.import_zip(NEW_CLASSIFICATION, data)["report"]["imported"] == 3
    again = studio.import_zip(NEW_CLASSIFICATION, data)
    assert (again["report"]["imported"], again["report"]["existing"]) == (0, 3)
    assert studio.repository.images.count_documents({"project": NEW_CLASSIFICATION}) == 3


def zip_of(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return out.getvalue()


def test_the_report_says_what_was_skipped_and_why(studio):
    data = zip_of({"cat/good.png": image_bytes(), "cat/broken.jpg": image_bytes("JPEG")[:40], "cat/empty.png": b"",
                   "loose.png": image_bytes(), "README.txt": b"hello", "BAD TAG!/x.png": image_bytes()})
    imported = studio.import_zip(NEW_CLASSIFICATION, data)
    assert imported["status"] == "done" and imported["report"]["imported"] == 1
    reasons = {s["file"]: s["reason"] for s in imported["report"]["skipped"]}
    assert set(reasons) == {"cat/broken.jpg", "cat/empty.png", "loose.png", "README.txt", "BAD TAG!/x.png"}
    assert reasons["cat/empty.png"] == "is empty" and "cannot be decoded" in reasons["cat/broken.jpg"]
    assert "tag folder" in reasons["loose.png"] and "invalid tag" in reasons["BAD TAG!/x.png"]
    assert imported["report"]["skipped_count"] == 5


def symlink_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("cat/a.png", image_bytes())
        link = zipfile.ZipInfo("cat/b.png")
        link.create_system = 3
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "/etc/passwd")
    return out.getvalue()


def encrypted_zip() -> bytes:
    """A zip whose central directory marks its entry encrypted (`zipfile` cannot write one)."""
    data = bytearray(zip_of({"cat/a.png": image_bytes()}))
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1  # general purpose flags, bit 0: encrypted
    return bytes(data)


def bomb_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat/a.png", image_bytes())
        archive.writestr("cat/huge.png", b"\0" * (20 << 20))
    return out.getvalue()


@pytest.mark.parametrize("data, error, code", [
    (b"not a zip at all", errors.UnsupportedMediaType, "not_a_zip"),
    (zip_of({"../evil/a.png": image_bytes()}), errors.InvalidArgument, "unsafe_entry"),
    (zip_of({"/abs/a.png": image_bytes()}), errors.InvalidArgument, "unsafe_entry"),
    (zip_of({"cat\\..\\a.png": image_bytes()}), errors.InvalidArgument, "unsafe_entry"),
    (zip_of({"C:/cat/a.png": image_bytes()}), errors.InvalidArgument, "unsafe_entry"),
    (symlink_zip(), errors.InvalidArgument, "unsafe_entry"),
    (encrypted_zip(), errors.Unprocessable, "encrypted_entry"),
    (bomb_zip(), errors.PayloadTooLarge, "zip_bomb"),
    (zip_of({f"cat/{i}.png": b"x" for i in range(201)}), errors.PayloadTooLarge, "too_many_entries"),
    (zip_of({"notes.txt": b"hello"}), errors.Unprocessable, "no_images"),
    (zip_of({"a.png": image_bytes()}), errors.Unprocessable, "no_images"),
    (zip_of({"annotations/instances_train.json": b"{not json", "images/train/1.png": image_bytes()}),
     errors.Unprocessable, "bad_annotation"),
    (zip_of({"Annotations/1.xml": b"<x/>", "JPEGImages/1.png": image_bytes()}), errors.Unprocessable, "format_mismatch"),
])
def test_a_hostile_or_unusable_zip_is_refused_and_leaves_nothing_behind(studio, data, error, code):
    with pytest.raises(error) as caught:
        studio.imports.create(1, NEW_CLASSIFICATION, UploadedFile("x.zip", io.BytesIO(data)))
    assert caught.value.code == code and "/tmp" not in caught.value.message
    assert studio.store.list_keys("") == [] and studio.queue.jobs.count_documents({}) == 0
    assert studio.import_repository.records.count_documents({}) == 0


def test_an_entity_expanding_voc_file_is_skipped_not_expanded(studio):
    evil = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;">]>'
            b"<annotation><filename>1.png</filename><object><name>&y;</name></object></annotation>")
    data = zip_of({"Annotations/1.xml": evil, "Annotations/2.xml": b"<annotation><filename>2.png</filename></annotation>",
                   "JPEGImages/1.png": image_bytes(), "JPEGImages/2.png": image_bytes()})
    imported = studio.import_zip(NEW_DETECTION, data)
    assert imported["report"]["imported"] == 1
    assert [s["file"] for s in imported["report"]["skipped"]] == ["Annotations/1.xml", "JPEGImages/1.png"]


def test_deleting_a_project_stops_its_dataset_jobs_and_the_sweep_removes_them(studio):
    classified(studio, {"cat": 2})
    studio.core.on_project_delete += [studio.exports.cancel_project, studio.imports.cancel_project]
    done = studio.export(CLASSIFICATION, format="csv")
    queued = studio.exports.create(1, CLASSIFICATION, {"format": "imagenet"})
    studio.core.delete_project_data(CLASSIFICATION)
    assert studio.queue.get(f"export-{queued['id']}").status == jobs.CANCELLED  # never started: at once
    assert studio.store.list_keys("exports/") == []  # the finished export's zip went with the project
    assert not studio.worker.run_once()  # nothing left to run
    studio.export_repository.records.update_many({}, {"$set": {"expires_at": mongo.utc_now().replace(year=2000)}})
    assert studio.exports.sweep_expired() == 2 and studio.queue.jobs.count_documents({}) == 0
    assert studio.export_repository.get(done["id"]) is None


def test_an_expired_export_still_running_is_cancelled_and_its_worker_removes_the_zip(studio):
    classified(studio, {"cat": 3})
    created = studio.exports.create(1, CLASSIFICATION, {"format": "csv"})
    job = studio.queue.claim("another worker", ["export"])  # a worker took it, then stalled
    studio.export_repository.records.update_many({}, {"$set": {"expires_at": mongo.utc_now().replace(year=2000)}})
    assert studio.exports.sweep_expired() == 0  # not removed under its worker: cancelled
    assert studio.queue.get(job.id).cancel_requested
    studio.store.put_bytes(f"exports/{CLASSIFICATION}/{created['id']}.zip", b"partial")
    studio.queue.jobs.update_one({"_id": job.id}, {"$set": {"lease_expires": mongo.utc_now().replace(year=2000)}})
    assert studio.worker.run_once()  # takes the dead worker's job over: cleans up, cancels
    assert studio.store.list_keys("exports/") == [] and studio.queue.get(job.id).status == jobs.CANCELLED
    assert studio.exports.sweep_expired() == 1 and studio.exports.list(1, CLASSIFICATION) == []
