"""The image service through the gateway, against the real local stack: every `/images` route,
two users' isolation, bad uploads that store nothing, signed media URLs, the gRPC API the other
services use, and object storage and MongoDB agreeing after every kind of delete.

Prediction end to end (real models) is the model service's tests' job; here only its refusals."""
from __future__ import annotations

import io
import itertools
import time
import urllib.parse
import uuid
import zipfile

import pymongo
import pytest
import requests
from PIL import Image

from waiting import eventually

from deploy.local import registry
from mlstudio.common import errors
from mlstudio.common.clients import ImageClient
from mlstudio.common.media_urls import MediaSigner
from mlstudio.image.v1 import image_pb2

pytestmark = pytest.mark.integration

IMAGE_FIELDS = {"id", "title", "location", "description", "url", "type", "user", "project", "isTrain", "captions",
                "boxes", "video", "frame_index", "timestamp_ms", "score", "detections"}
DEPLOYED = {component.name for component in registry.COMPONENTS}


_colors = itertools.count(1)


def image_bytes(fmt="PNG", size=(16, 12), color=None) -> bytes:
    """A small image; without `color`, each call's pixels differ from every other call's, since
    the same bytes uploaded twice into a project are stored once."""
    if color is None:
        n = next(_colors)
        color = (n % 256, n // 256 % 256, 200)
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Owner:
    """A registered user with a project, and a session that carries their token."""

    def __init__(self, stack, api, register, project_type="Classification"):
        self.user_id, token = register(stack, unique("img"))
        self.session = api(stack, token)
        created = self.session.post("/projects/all", params={"user_id": self.user_id},
                                    json={"title": "images", "description": "", "type": project_type})
        assert created.status_code in (200, 201), created.text
        self.project_id = created.json()["id"]

    def params(self, **extra):
        return {"user_id": self.user_id, "project_id": self.project_id, **extra}

    def upload(self, tag, named_files):
        return self.session.post(f"/images/{tag}", params=self.params(),
                                 files=[("files", (name, content)) for name, content in named_files])


@pytest.fixture
def owner(stack, api, register):
    return Owner(stack, api, register)


@pytest.fixture
def intruder(stack, api, register):
    return Owner(stack, api, register)


def image_db(stack):
    client = pymongo.MongoClient("127.0.0.1", int(stack.ports["MONGO_PORT"]), directConnection=True, serverSelectionTimeoutMS=5000)
    return client["mlstudio_image"]


def stored_objects(stack, project_id) -> list[str]:
    root = stack.data_dir / "objects"
    prefix = root / "images" / str(project_id)
    return sorted(p.relative_to(root).as_posix() for p in prefix.rglob("*") if p.is_file()) if prefix.exists() else []


def stored_records(stack, project_id) -> list[str]:
    return sorted(doc["key"] for doc in image_db(stack).images.find({"project": project_id}))


def assert_storage_agrees(stack, project_id) -> list[str]:
    objects = stored_objects(stack, project_id)
    assert objects == stored_records(stack, project_id)
    return objects


def image_client(stack) -> ImageClient:
    return ImageClient(f"127.0.0.1:{stack.ports['IMAGE_GRPC_PORT']}", deadline_s=30)


# ---- every route, for the owner ----------------------------------------------------------------

def test_upload_list_and_read(stack, owner):
    created = owner.upload("Cat", [("a.png", image_bytes()), ("b.jpg", image_bytes("JPEG")), ("c.webp", image_bytes("WEBP"))])
    assert created.status_code == 201, created.text
    images = created.json()
    assert len(images) == 3 and all(IMAGE_FIELDS <= set(image) for image in images)
    assert {image["type"] for image in images} == {"cat"}
    assert [image["title"] for image in images] == ["a.png", "b.jpg", "c.webp"]
    first = images[0]
    assert (first["user"], first["project"], first["captions"], first["boxes"], first["video"]) == (owner.user_id, owner.project_id, None, None, None)

    all_images = owner.session.get("/images/all", params=owner.params()).json()
    assert [i["id"] for i in all_images] == [i["id"] for i in images]
    assert [i["id"] for i in owner.session.get("/images/CAT", params=owner.params()).json()] == [i["id"] for i in images]
    page = owner.session.get("/images/all", params=owner.params(limit=1, offset=1)).json()
    assert [i["id"] for i in page] == [images[1]["id"]]
    one = owner.session.get(f"/images/{first['id']}")
    assert one.status_code == 200 and one.json()["title"] == "a.png"
    assert owner.session.get("/images/all").status_code == 400  # project_id is required
    assert_storage_agrees(stack, owner.project_id)


def test_the_same_file_uploaded_twice_is_stored_once(stack, owner):
    data = image_bytes("JPEG")
    (first,) = owner.upload("cat", [("a.jpg", data)]).json()
    again = owner.upload("dog", [("copy.jpg", data)])
    assert again.status_code == 201 and again.json()[0]["id"] == first["id"]
    assert again.json()[0]["type"] == "cat" and set(again.json()[0]) == set(first)
    assert len(assert_storage_agrees(stack, owner.project_id)) == 1


def test_an_export_runs_in_the_background_and_its_zip_downloads_without_a_token(stack, owner):
    owner.upload("cat", [("a.png", image_bytes()), ("b.png", image_bytes())])
    owner.upload("dog", [("c.png", image_bytes())])
    path = f"/projects/{owner.project_id}/exports"
    created = owner.session.post(path, json={"format": "imagenet", "val_fraction": 0.5, "seed": 3})
    assert created.status_code == 202, created.text
    export = created.json()
    deadline = time.monotonic() + 60
    while export["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        export = owner.session.get(f"{path}/{export['id']}").json()
    assert export["status"] == "done", export
    assert export["progress"] == {"done": 3, "total": 3} and export["splits"] == {"train": 2, "val": 1}
    assert [e["id"] for e in owner.session.get(path).json()] == [export["id"]]
    download = requests.get(export["url"], timeout=30)
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(download.content)).namelist()
    assert sorted(n.split("/")[1] for n in names if n.endswith(".png")) == ["cat", "cat", "dog"]
    bad = owner.session.post(path, json={"format": "coco"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_format"
    assert requests.get(export["url"].replace("signature=", "signature=0"), timeout=30).status_code == 403

    # ... and the zip imports back into a new project: the same images and tags
    created = owner.session.post("/projects/all", params={"user_id": owner.user_id},
                                 json={"title": "copy", "description": "", "type": "Classification"})
    copy = created.json()["id"]
    started = owner.session.post(f"/projects/{copy}/imports", files={"file": ("dataset.zip", download.content)})
    assert started.status_code == 202, started.text
    imported = started.json()
    deadline = time.monotonic() + 60
    while imported["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        imported = owner.session.get(f"/projects/{copy}/imports/{imported['id']}").json()
    assert imported["status"] == "done" and imported["report"]["imported"] == 3, imported

    def images_of(project):
        return sorted((i["type"], i["width"], i["height"]) for i in owner.session.get("/images/all", params={"project_id": project}).json())

    assert images_of(copy) == images_of(owner.project_id)
    assert [i["id"] for i in owner.session.get(f"/projects/{copy}/imports").json()] == [imported["id"]]


def test_a_hostile_zip_is_refused_and_leaves_nothing_behind(stack, owner):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat/a.png", image_bytes())
        archive.writestr("../../escape.png", image_bytes())
    refused = owner.session.post(f"/projects/{owner.project_id}/imports", files={"file": ("evil.zip", buffer.getvalue())})
    assert refused.status_code == 400 and refused.json()["code"] == "unsafe_entry", refused.text
    assert "escape.png" in refused.json()["message"]
    assert owner.session.get(f"/projects/{owner.project_id}/imports").json() == []
    assert owner.session.get("/images/all", params=owner.params()).json() == []
    assert not (stack.data_dir / "objects" / "imports" / str(owner.project_id)).exists()


def test_near_duplicates_are_listed_in_groups(stack, owner):
    picture = Image.new("RGB", (64, 48), (20, 20, 20))
    picture.paste((240, 240, 240), (8, 10, 30, 40))
    as_png, as_jpeg = io.BytesIO(), io.BytesIO()
    picture.save(as_png, "PNG")
    picture.save(as_jpeg, "JPEG", quality=75)
    (png, jpeg) = owner.upload("scene", [("a.png", as_png.getvalue()), ("a.jpg", as_jpeg.getvalue())]).json()
    owner.upload("other", [("b.png", image_bytes(color=(200, 30, 30)))])
    listed = owner.session.get(f"/projects/{owner.project_id}/duplicates")
    assert listed.status_code == 200, listed.text
    assert [[image["id"] for image in group["images"]] for group in listed.json()] == [[png["id"], jpeg["id"]]]


def test_tag_summary_retag_and_rename(stack, owner):
    cats = owner.upload("cat", [("c1.png", image_bytes()), ("c2.png", image_bytes())]).json()
    owner.upload("student", [("s1.png", image_bytes())])
    summary = owner.session.get("/images/type", params=owner.params()).json()
    assert [(row["name"], row["count"]) for row in summary] == [("cat", 2), ("student", 1)]
    assert summary[0]["avatarImage"]["id"] == cats[0]["id"] and IMAGE_FIELDS <= set(summary[0]["avatarImage"])

    retagged = owner.session.put(f"/images/{cats[0]['id']}", params={"type": "Dog"})
    assert retagged.status_code == 200 and retagged.json()["type"] == "dog"
    assert retagged.json()["location"] == cats[0]["location"]

    same = owner.session.put("/images/cat", params=owner.params(type="CAT"))
    assert same.status_code == 406
    merged = owner.session.put("/images/cat", params=owner.params(type="Student"))
    assert merged.status_code == 200
    assert sorted(i["title"] for i in merged.json()) == ["c2.png", "s1.png"]
    assert owner.session.get("/images/cat", params=owner.params()).json() == []
    reserved = owner.session.put("/images/student", params=owner.params(type="all"))
    assert reserved.status_code == 400 and reserved.json()["code"] == "invalid_tag"
    assert_storage_agrees(stack, owner.project_id)


def test_deletes_remove_records_and_objects(stack, owner):
    a, b = owner.upload("cat", [("a.png", image_bytes()), ("b.png", image_bytes())]).json()
    owner.upload("dog", [("d.png", image_bytes())])
    assert len(assert_storage_agrees(stack, owner.project_id)) == 3

    deleted = owner.session.delete(f"/images/{a['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"message": "success"}
    assert owner.session.get(f"/images/{a['id']}").status_code == 404
    assert len(assert_storage_agrees(stack, owner.project_id)) == 2

    assert owner.session.delete("/images/Dog", params=owner.params()).json() == {"message": "success"}
    assert assert_storage_agrees(stack, owner.project_id) == [b["location"]]

    assert owner.session.delete("/images/all", params=owner.params()).json() == {"message": "success"}
    assert assert_storage_agrees(stack, owner.project_id) == []
    assert owner.session.get("/images/all", params=owner.params()).json() == []


def test_deleting_the_project_deletes_its_images(stack, owner):
    owner.upload("cat", [("a.png", image_bytes())])
    assert owner.session.delete(f"/projects/{owner.project_id}").json() == {"message": "success"}
    # The delete answers once the project is hidden; its data goes in the background.
    eventually(lambda: stored_objects(stack, owner.project_id) == [] and stored_records(stack, owner.project_id) == [],
               "the project's images deleted with it")


# ---- isolation -------------------------------------------------------------------------------

def test_another_user_sees_and_changes_nothing(stack, owner, intruder):
    (image,) = owner.upload("cat", [("a.png", image_bytes())]).json()
    theirs = {"user_id": intruder.user_id, "project_id": owner.project_id}
    attempts = [
        intruder.session.get("/images/all", params=theirs),
        intruder.session.get("/images/cat", params=theirs),
        intruder.session.get("/images/type", params=theirs),
        intruder.session.post("/images/cat", params=theirs, files=[("files", ("x.png", image_bytes()))]),
        intruder.session.put("/images/cat", params={**theirs, "type": "dog"}),
        intruder.session.delete("/images/cat", params=theirs),
        intruder.session.delete("/images/all", params=theirs),
        intruder.session.get(f"/images/{image['id']}"),
        intruder.session.put(f"/images/{image['id']}", params={"type": "dog"}),
        intruder.session.delete(f"/images/{image['id']}"),
    ]
    assert [response.status_code for response in attempts] == [404] * len(attempts)
    assert not any(image["location"] in response.text for response in attempts)
    # Claiming to be the owner with one's own token is refused outright.
    impersonation = intruder.session.get("/images/all", params=owner.params())
    assert impersonation.status_code == 403
    assert owner.session.get(f"/images/{image['id']}").json()["type"] == "cat"
    assert stored_records(stack, owner.project_id) == [image["location"]]
    assert intruder.session.get("/images/all", params=intruder.params()).json() == []


def test_a_request_without_a_token_is_refused(stack, api, owner):
    assert api(stack).get("/images/all", params=owner.params()).status_code == 401


# ---- bad uploads -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad_name, bad_content, status", [
    ("empty.png", b"", 400),
    ("notes.txt", b"this is not an image at all", 415),
    ("broken.jpg", image_bytes("JPEG", size=(64, 64))[:300], 422),
    ("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(21 * 1024 * 1024), 413),
])
def test_one_bad_file_among_good_ones_stores_nothing(stack, owner, bad_name, bad_content, status):
    response = owner.upload("cat", [("good1.png", image_bytes()), (bad_name, bad_content), ("good2.png", image_bytes())])
    assert response.status_code == status, response.text
    body = response.json()
    assert bad_name in body["message"] and body["code"]
    assert stored_objects(stack, owner.project_id) == [] and stored_records(stack, owner.project_id) == []


def test_uploads_need_files_and_a_valid_tag(owner):
    assert owner.session.post("/images/cat", params=owner.params()).status_code == 400
    for tag in ("all", "..", "a%3Fb"):
        response = owner.session.post(f"/images/{tag}", params=owner.params(), files=[("files", ("a.png", image_bytes()))])
        assert response.status_code in (400, 404), (tag, response.text)


# ---- signed media URLs -----------------------------------------------------------------------

def test_a_signed_url_loads_without_a_token(stack, owner):
    (image,) = owner.upload("cat", [("a.jpg", image_bytes("JPEG"))]).json()
    loaded = requests.get(image["url"], timeout=30)
    assert loaded.status_code == 200
    assert loaded.headers["Content-Type"] == "image/jpeg"
    assert loaded.content == (stack.data_dir / "objects" / image["location"]).read_bytes()
    assert "max-age=" in loaded.headers["Cache-Control"]
    cached = requests.get(image["url"], headers={"If-None-Match": loaded.headers["ETag"]}, timeout=30)
    assert cached.status_code == 304


def test_a_tampered_or_expired_url_is_refused(stack, owner):
    first, second = owner.upload("cat", [("a.png", image_bytes()), ("b.png", image_bytes())]).json()
    url = urllib.parse.urlparse(first["url"])
    query = dict(urllib.parse.parse_qsl(url.query))
    other_image = f"{stack.url}/images/{second['id']}/file?{url.query}"
    longer = f"{stack.url}{url.path}?expires={int(query['expires']) + 3600}&signature={query['signature']}"
    bad_signature = f"{stack.url}{url.path}?expires={query['expires']}&signature={'0' * 64}"
    unsigned = f"{stack.url}{url.path}"
    for tampered in (other_image, longer, bad_signature, unsigned):
        response = requests.get(tampered, timeout=30)
        assert response.status_code in (401, 403), tampered
        assert response.headers.get("Content-Type", "").startswith("application/json")
    key = (stack.data_dir / "secrets" / "media-signing-key").read_text().strip()
    expired = MediaSigner(key, stack.url, ttl_s=60).url(url.path, now=1_000_000)
    response = requests.get(expired, timeout=30)
    assert response.status_code == 403 and response.json()["code"] == "signature_expired"


# ---- the gRPC API the other services use -----------------------------------------------------

def frame(video_id, index, tag="cat", **extra):
    return image_pb2.NewImage(content=image_bytes("JPEG"), content_type="image/jpeg", tag=tag, title=f"frame {index}",
                              video_id=video_id, frame_index=index, timestamp_ms=index * 40, **extra)


def test_frames_are_idempotent_streamed_and_deleted_by_video(stack, owner):
    client = image_client(stack)
    video_id = 10_000_000 + uuid.uuid4().int % 1_000_000
    first = client.create_images(owner.project_id, owner.user_id, [frame(video_id, 0, score=0.75), frame(video_id, 10, tag="Dog")])
    again = client.create_images(owner.project_id, owner.user_id, [frame(video_id, 0), frame(video_id, 10), frame(video_id, 20)])
    assert [i.id for i in again[:2]] == [i.id for i in first]
    assert len(stored_records(stack, owner.project_id)) == 3
    assert [(i.tag, i.frame_index) for i in client.list_images(owner.project_id, owner.user_id, video_id=video_id)] == [("cat", 0), ("dog", 10), ("cat", 20)]

    # The frame the model scored 0.75 waits for review (under the default threshold, 0.8): training
    # leaves it out unless asked for every image.
    items = list(client.stream_dataset(owner.project_id, owner.user_id, include_unchecked=True))
    assert sorted(item.tag for item in items) == ["cat", "cat", "dog"] and all(item.content[:2] == b"\xff\xd8" for item in items)
    assert sorted(item.image_id for item in client.stream_dataset(owner.project_id, owner.user_id)) == sorted(i.id for i in again[1:])
    with pytest.raises(errors.NotFound):
        client.create_images(owner.project_id, owner.user_id + 10_000, [frame(video_id, 30)])

    via_rest = owner.session.get(f"/images/{first[0].id}").json()
    assert (via_rest["video"], via_rest["frame_index"], via_rest["timestamp_ms"], via_rest["score"]) == (video_id, 0, 0, pytest.approx(0.75))

    assert client.delete_images_by_video(video_id, owner.project_id) == 3
    assert client.delete_images_by_video(video_id, owner.project_id) == 0
    assert assert_storage_agrees(stack, owner.project_id) == []


def test_images_by_video(stack, owner, intruder):
    client = image_client(stack)
    video_id = 20_000_000 + uuid.uuid4().int % 1_000_000
    client.create_images(owner.project_id, owner.user_id, [frame(video_id, 5), frame(video_id, 1)])
    path_form = owner.session.get(f"/images/byVideo/{video_id}")
    query_form = owner.session.get("/images/byVideo", params={"video_id": video_id})
    if "video" in DEPLOYED:
        # The video service decides whose video it is, and it knows of no such video.
        assert path_form.status_code == 404 and query_form.status_code == 404
    else:
        assert path_form.status_code == 200 and path_form.json() == query_form.json()
        answer = path_form.json()
        assert answer["type"] == "Classification"
        assert [i["frame_index"] for i in answer["date"]] == [1, 5] and answer["images"] == answer["date"]
        assert intruder.session.get(f"/images/byVideo/{video_id}").status_code == 404
    assert owner.session.get("/images/byVideo").status_code == 400


def test_detection_frames_show_captions_and_boxes(stack, api, register):
    owner = Owner(stack, api, register, project_type="Detection")
    boxes = [image_pb2.Detection(label="car", score=0.875, x1=10.2, y1=20, x2=110.5, y2=220),
             image_pb2.Detection(label="person", score=0.5, x1=1, y1=2, x2=3, y2=4)]
    (created,) = image_client(stack).create_images(owner.project_id, owner.user_id, [frame(30_000_000 + uuid.uuid4().int % 1_000_000, 0, tag="car", detections=boxes)])
    image = owner.session.get(f"/images/{created.id}").json()
    assert image["captions"] == ",car 0.875,person 0.500"
    assert image["boxes"] == ",[10 20 111 220],[1 2 3 4]"
    assert [d["label"] for d in image["detections"]] == ["car", "person"]


# ---- prediction: refusals only (the model service's tests predict with real models) ----------

def test_predict_refuses_an_unknown_model_and_stores_nothing(stack, owner):
    response = owner.session.post("/images/predict", params=owner.params(), data={"model_id": "987654321"},
                                  files=[("files", ("a.png", image_bytes()))])
    assert response.status_code == (404 if "model" in DEPLOYED else 501), response.text
    missing = owner.session.post("/images/predict", params=owner.params(), files=[("files", ("a.png", image_bytes()))])
    assert missing.status_code == 400
    assert stored_objects(stack, owner.project_id) == []
