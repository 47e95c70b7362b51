"""The image core with in-memory fakes: ownership, uploads, tags, deletes, frames, predictions,
media, and that nothing is ever half-written."""
import hashlib
import io
import urllib.parse

import pytest
from image_fakes import NOW, build_world, image_bytes
from image_service.core import NewFrame, Page
from image_service.uploads import UploadedFile
from mlstudio.common import errors, mongo
from mlstudio.common.deadlines import Deadline
from mlstudio.common.detections import detection

IMAGE_FIELDS = {"id", "title", "location", "description", "url", "type", "user", "project", "isTrain", "captions",
                "boxes", "video", "frame_index", "timestamp_ms", "score", "detections"}


def files(*specs):
    """UploadedFiles from (name, bytes) pairs, or names alone for small valid PNGs."""
    out = []
    for spec in specs:
        name, data = (spec, image_bytes()) if isinstance(spec, str) else spec
        out.append(UploadedFile(name, io.BytesIO(data)))
    return out


def stored_keys(world):
    return sorted(world.store.objects)


# ---- uploads ---------------------------------------------------------------------------------

def test_upload_stores_bytes_under_immutable_keys_and_answers_images(world):
    images = world.core.upload(1, 10, " Cat ", files("a.png", ("b.jpg", image_bytes("JPEG"))))
    assert [image["type"] for image in images] == ["cat", "cat"]
    first, second = images
    assert IMAGE_FIELDS <= set(first)
    assert first["location"] == f"images/10/{first['id']}.png" and second["location"] == f"images/10/{second['id']}.jpg"
    assert stored_keys(world) == sorted([first["location"], second["location"]])
    assert world.store.content_types[second["location"]] == "image/jpeg"
    assert (first["user"], first["project"], first["title"], first["isTrain"]) == (1, 10, "a.png", True)
    assert first["captions"] is None and first["boxes"] is None and first["detections"] is None
    assert first["video"] is None and first["score"] is None
    assert first["url"].startswith(f"http://gateway.test/images/{first['id']}/file?expires=")


def test_upload_into_a_detection_project_has_empty_detections(world):
    (image,) = world.core.upload(1, 11, "car", files("a.png"))
    assert image["detections"] == [] and image["captions"] == "" and image["boxes"] == ""


def test_one_bad_file_among_good_ones_stores_nothing(world):
    with pytest.raises(errors.UnsupportedMediaType) as caught:
        world.core.upload(1, 10, "cat", files("good1.png", ("bad.txt", b"not an image"), "good2.png"))
    assert "bad.txt" in caught.value.message
    assert world.store.objects == {} and world.repository.docs == {}


def test_another_users_project_answers_not_found_and_stores_nothing(world):
    with pytest.raises(errors.NotFound):
        world.core.upload(2, 10, "cat", files("a.png"))
    with pytest.raises(errors.NotFound):
        world.core.upload(1, 999, "cat", files("a.png"))
    assert world.store.objects == {} and world.repository.docs == {}


def test_an_invalid_tag_is_refused_before_anything_is_stored(world):
    with pytest.raises(errors.InvalidArgument):
        world.core.upload(1, 10, "predict", files("a.png"))
    assert world.store.objects == {}


def test_a_storage_failure_half_way_removes_what_was_written(world):
    world.store.fail_put_after = 1
    with pytest.raises(errors.Unavailable):
        world.core.upload(1, 10, "cat", files("a.png", "b.png", "c.png"))
    assert world.store.objects == {} and world.repository.docs == {}


def test_a_database_failure_removes_the_bytes_and_any_inserted_document(world):
    world.repository.fail_insert = True
    with pytest.raises(errors.Unavailable):
        world.core.upload(1, 10, "cat", files("a.png", "b.png"))
    assert world.store.objects == {} and world.repository.docs == {}


# ---- reading ---------------------------------------------------------------------------------

def test_lists_by_project_and_tag_with_limit_and_offset(world):
    cats = world.core.upload(1, 10, "cat", files("1.png", "2.png", "3.png"))
    world.core.upload(1, 10, "dog", files("4.png"))
    world.core.upload(2, 20, "cat", files("other.png"))
    assert [i["title"] for i in world.core.list_images(1, 10)] == ["1.png", "2.png", "3.png", "4.png"]
    assert [i["id"] for i in world.core.list_images(1, 10, tag="CAT")] == [c["id"] for c in cats]
    assert [i["title"] for i in world.core.list_images(1, 10, page=Page(limit=2, offset=1))] == ["2.png", "3.png"]
    assert world.core.list_images(1, 10, tag="bird") == []
    with pytest.raises(errors.NotFound):
        world.core.list_images(2, 10)


def test_one_image_is_only_its_owners(world):
    (image,) = world.core.upload(1, 10, "cat", files("a.png"))
    assert world.core.get(1, image["id"])["id"] == image["id"]
    assert world.core.get(1, image["id"], project_id=10)["id"] == image["id"]
    for user, project in [(2, None), (1, 11)]:
        with pytest.raises(errors.NotFound):
            world.core.get(user, image["id"], project)


def test_tag_summary_counts_and_gives_the_oldest_image_as_avatar(world):
    dogs = world.core.upload(1, 10, "dog", files("d1.png", "d2.png"))
    world.core.upload(1, 10, "cat", files("c1.png"))
    summary = world.core.tag_summary(1, 10)
    assert [(row["name"], row["count"]) for row in summary] == [("cat", 1), ("dog", 2)]
    assert summary[1]["avatarImage"]["id"] == dogs[0]["id"]
    assert IMAGE_FIELDS <= set(summary[1]["avatarImage"])


# ---- tags ------------------------------------------------------------------------------------

def test_retag_moves_one_image(world):
    (image, other) = world.core.upload(1, 10, "cat", files("a.png", "b.png"))
    moved = world.core.retag(1, image["id"], "Dog")
    assert moved["type"] == "dog" and moved["location"] == image["location"]
    assert [i["id"] for i in world.core.list_images(1, 10, tag="cat")] == [other["id"]]
    with pytest.raises(errors.NotFound):
        world.core.retag(2, image["id"], "dog")
    with pytest.raises(errors.InvalidArgument):
        world.core.retag(1, image["id"], "..")


def test_rename_merges_into_an_existing_tag_without_moving_bytes(world):
    world.core.upload(1, 10, "cat", files("c1.png", "c2.png"))
    world.core.upload(1, 10, "student", files("s1.png"))
    keys_before = stored_keys(world)
    now_students = world.core.rename_tag(1, 10, "Cat", "Student")
    assert sorted(i["title"] for i in now_students) == ["c1.png", "c2.png", "s1.png"]
    assert world.core.list_images(1, 10, tag="cat") == []
    assert stored_keys(world) == keys_before


def test_rename_to_the_same_tag_is_not_acceptable_and_of_a_missing_tag_not_found(world):
    world.core.upload(1, 10, "cat", files("c1.png"))
    with pytest.raises(errors.NotAcceptable):
        world.core.rename_tag(1, 10, "cat", " CAT ")
    with pytest.raises(errors.NotFound):
        world.core.rename_tag(1, 10, "bird", "cat")
    with pytest.raises(errors.NotFound):
        world.core.rename_tag(2, 10, "cat", "dog")


# ---- deletes ---------------------------------------------------------------------------------

def test_deletes_remove_metadata_and_bytes(world):
    (one, two) = world.core.upload(1, 10, "cat", files("a.png", "b.png"))
    world.core.upload(1, 10, "dog", files("c.png"))
    other = world.core.upload(2, 20, "cat", files("x.png"))[0]
    world.core.delete_image(1, one["id"])
    assert one["location"] not in world.store.objects and world.repository.get(one["id"]) is None
    world.core.delete_tag(1, 10, "CAT")
    assert [i["type"] for i in world.core.list_images(1, 10)] == ["dog"]
    world.core.delete_all(1, 10)
    assert world.core.list_images(1, 10) == []
    assert stored_keys(world) == [other["location"]]
    assert two["id"] not in world.repository.docs


def test_another_user_cannot_delete(world):
    (image,) = world.core.upload(1, 10, "cat", files("a.png"))
    with pytest.raises(errors.NotFound):
        world.core.delete_image(2, image["id"])
    with pytest.raises(errors.NotFound):
        world.core.delete_all(2, 10)
    assert len(world.store.objects) == 1


def test_a_delete_that_fails_half_way_is_hidden_and_a_retry_finishes_it(world):
    (image,) = world.core.upload(1, 10, "cat", files("a.png"))
    world.store.fail_delete = True
    with pytest.raises(errors.Unavailable):
        world.core.delete_image(1, image["id"])
    assert world.core.list_images(1, 10) == []  # hidden at once
    world.store.fail_delete = False
    world.core.delete_image(1, image["id"])
    assert world.store.objects == {} and world.repository.docs == {}


def test_the_sweep_finishes_deletes_left_half_way(world):
    world.core.upload(1, 10, "cat", files("a.png", "b.png"))
    world.store.fail_delete = True
    with pytest.raises(errors.Unavailable):
        world.core.delete_tag(1, 10, "cat")
    world.store.fail_delete = False
    assert world.core.finish_pending_deletes() == 2
    assert world.store.objects == {} and world.repository.docs == {}


def test_project_data_deletion_also_removes_objects_without_metadata(world):
    world.core.upload(1, 10, "cat", files("a.png"))
    world.store.objects["images/10/999.png"] = b"left by a crashed upload"
    world.store.objects["images/100/1.png"] = b"another project"
    assert world.core.delete_project_data(10) == 1
    assert world.core.delete_project_data(10) == 0
    assert stored_keys(world) == ["images/100/1.png"]


# ---- the same bytes twice --------------------------------------------------------------------

def test_the_same_bytes_uploaded_again_answer_the_stored_image(world):
    data = image_bytes()
    (first,) = world.core.upload(1, 10, "cat", files(("a.png", data)))
    again = world.core.upload(1, 10, "dog", files(("copy.png", data), "new.png"))
    assert again[0] == first  # same id, tag, title, and the same response shape
    assert again[1]["id"] != first["id"] and again[1]["type"] == "dog"
    assert len(world.repository.docs) == 2 and len(world.store.objects) == 2


def test_the_same_bytes_twice_in_one_request_are_stored_once(world):
    data = image_bytes()
    first, second = world.core.upload(1, 10, "cat", files(("a.png", data), ("b.png", data)))
    assert first == second and len(world.store.objects) == 1


def test_the_same_bytes_in_another_project_are_stored_again(world):
    data = image_bytes()
    (mine,) = world.core.upload(1, 10, "cat", files(("a.png", data)))
    (theirs,) = world.core.upload(2, 20, "cat", files(("a.png", data)))
    assert mine["id"] != theirs["id"] and len(world.store.objects) == 2


def test_deleted_bytes_can_be_uploaded_again(world):
    data = image_bytes()
    (first,) = world.core.upload(1, 10, "cat", files(("a.png", data)))
    world.core.delete_image(1, first["id"])
    (again,) = world.core.upload(1, 10, "cat", files(("a.png", data)))
    assert again["id"] != first["id"] and stored_keys(world) == [again["location"]]


def test_a_prediction_of_known_bytes_answers_the_stored_image_without_asking_the_model(world):
    data = image_bytes()
    (first,) = world.core.upload(1, 10, "cat", files(("a.png", data)))
    world.models.labels = [("dog", 0.9)]
    known, new = world.core.predict(1, 10, 7, files(("a.png", data), "b.png"))
    assert known == first and new["type"] == "dog"
    assert world.models.calls == [("classify", 1)]


def test_a_concurrent_upload_that_stored_the_bytes_first_wins_and_our_copy_goes(world):
    data = image_bytes()
    digest = hashlib.sha256(data).hexdigest()
    world.repository.uploads_stored_meanwhile = [{
        "_id": 500, "project": 10, "user": 1, "tag": "cat", "title": "theirs.png", "key": "images/10/500.png",
        "content_type": "image/png", "size": len(data), "sha256": digest, "video": None, "frame_index": None,
        "timestamp_ms": None, "score": None, "detections": None, "distinct_bytes": True, "create_time": mongo.utc_now()}]
    world.store.objects["images/10/500.png"] = data
    ours, other = world.core.upload(1, 10, "cat", files(("ours.png", data), "other.png"))
    assert (ours["id"], ours["title"]) == (500, "theirs.png")
    assert stored_keys(world) == sorted(["images/10/500.png", other["location"]])


def test_identical_frames_of_a_video_are_each_kept(world):
    data = image_bytes("JPEG")
    frames = [NewFrame(content=data, tag="cat", video_id=5, frame_index=index) for index in (0, 1)]
    first, second = world.core.create_frames(1, 10, frames)
    assert first["id"] != second["id"] and len(world.store.objects) == 2


# ---- near-duplicates --------------------------------------------------------------------------

def picture(kind: str, fmt="PNG", size=(64, 48), quality=95) -> bytes:
    """Distinct scenes: a bright square on the left, on the right, or bars; flat grey."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", size, (20, 20, 20) if kind != "grey" else (128, 128, 128))
    draw = ImageDraw.Draw(canvas)
    w, h = size
    if kind == "left":
        draw.rectangle([w // 10, h // 5, w // 2.5, h // 1.3], fill=(240, 240, 240))
    elif kind == "right":
        draw.rectangle([w // 1.7, h // 5, w - w // 10, h // 1.3], fill=(240, 240, 240))
    elif kind == "bars":
        for x in range(0, w, w // 8):
            draw.rectangle([x, 0, x + w // 16, h], fill=(200, 60, 60))
    out = io.BytesIO()
    canvas.save(out, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def test_near_duplicates_are_grouped_and_distinct_scenes_are_not(world):
    world.core.limits = type(world.core.limits)(max_bytes=1 << 20, max_files=10, max_pixels=1 << 20)
    uploaded = world.core.upload(1, 10, "scene", files(
        ("left.png", picture("left")), ("right.png", picture("right")), ("bars.png", picture("bars")),
        ("left.jpg", picture("left", "JPEG", quality=70)), ("left-big.png", picture("left", size=(128, 96))),
        ("bars.jpg", picture("bars", "JPEG", quality=80)), ("grey.png", picture("grey"))))
    ids = {image["title"]: image["id"] for image in uploaded}
    groups = [[image["id"] for image in group["images"]] for group in world.core.near_duplicates(1, 10)]
    assert groups == [[ids["left.png"], ids["left.jpg"], ids["left-big.png"]], [ids["bars.png"], ids["bars.jpg"]]]
    assert IMAGE_FIELDS <= set(world.core.near_duplicates(1, 10)[0]["images"][0])


def test_images_stored_before_hashes_get_theirs_when_first_listed(world):
    world.core.limits = type(world.core.limits)(max_bytes=1 << 20, max_files=10, max_pixels=1 << 20)
    first, second = world.core.upload(1, 10, "scene", files(("a.png", picture("left")), ("b.jpg", picture("left", "JPEG"))))
    for doc in world.repository.docs.values():
        del doc["phash"]
    assert [[i["id"] for i in g["images"]] for g in world.core.near_duplicates(1, 10)] == [[first["id"], second["id"]]]
    assert all(len(doc["phash"]) == 18 for doc in world.repository.docs.values())


def test_near_duplicates_of_another_users_project_are_not_found(world):
    with pytest.raises(errors.NotFound):
        world.core.near_duplicates(2, 10)


# ---- frames (gRPC CreateImages) --------------------------------------------------------------

def frame(index, tag="cat", video=5, **extra):
    return NewFrame(content=image_bytes("JPEG"), tag=tag, video_id=video, frame_index=index, timestamp_ms=index * 40, **extra)


def test_frames_are_idempotent_on_video_and_frame_index(world):
    first = world.core.create_frames(1, 10, [frame(0, score=0.9), frame(10)])
    again = world.core.create_frames(1, 10, [frame(10), frame(0), frame(20)])
    assert [i["id"] for i in again[:2]] == [first[1]["id"], first[0]["id"]]
    assert [i["frame_index"] for i in again] == [10, 0, 20]
    assert len(world.repository.docs) == 3 and len(world.store.objects) == 3
    assert (first[0]["video"], first[0]["timestamp_ms"], first[0]["score"]) == (5, 0, pytest.approx(0.9))


def test_duplicates_within_one_batch_are_stored_once(world):
    images = world.core.create_frames(1, 10, [frame(3), frame(3)])
    assert images[0]["id"] == images[1]["id"] and len(world.store.objects) == 1


def test_a_concurrent_retry_that_stored_a_frame_first_wins_and_our_copy_goes(world):
    world.repository.frames_stored_meanwhile = [{
        "_id": 500, "project": 10, "user": 1, "tag": "cat", "title": "t", "key": "images/10/500.jpg",
        "content_type": "image/jpeg", "size": 1, "sha256": "0" * 64, "video": 5, "frame_index": 0,
        "timestamp_ms": 0, "score": None, "detections": None, "create_time": mongo.utc_now()}]
    world.store.objects["images/10/500.jpg"] = b"theirs"
    images = world.core.create_frames(1, 10, [frame(0), frame(1)])
    assert sorted(i["id"] for i in images) == sorted([500, images[1]["id"]])
    assert images[0]["id"] == 500
    assert stored_keys(world) == sorted(["images/10/500.jpg", images[1]["location"]])


def test_detection_frames_keep_detections_and_are_filed_as_detected(world):
    """`detected` is what the original filed them under, and what the original UI's box editor needs."""
    found = [detection("car", 0.8, 1, 2, 30, 40), detection("person", 0.95, 5, 5, 10, 20)]
    image, empty = world.core.create_frames(1, 11, [frame(0, tag="", detections=found), frame(1, tag="")])
    assert image["type"] == "detected" and image["score"] == pytest.approx(0.95)
    assert image["captions"] == ",car 0.800,person 0.950"
    assert image["boxes"] == ",[1 2 30 40],[5 5 10 20]"
    assert image["detections"][1] == {"label": "person", "score": 0.95, "box": [5.0, 5.0, 10.0, 20.0]}
    assert (empty["type"], empty["score"], empty["detections"], empty["boxes"]) == ("detected", None, [], "")


def test_detection_frames_filed_by_top_label_when_the_server_says_so():
    world = build_world(detection_filing="top_label")
    found = [detection("car", 0.8, 1, 2, 30, 40), detection("person", 0.95, 5, 5, 10, 20)]
    image, empty = world.core.create_frames(1, 11, [frame(0, tag="", detections=found), frame(1, tag="")])
    assert (image["type"], image["score"], image["detections"]) == ("person", pytest.approx(0.95), found)
    assert (empty["type"], empty["detections"]) == ("unlabeled", [])


def test_an_unknown_detection_filing_is_refused():
    with pytest.raises(ValueError, match="detected or top_label"):
        build_world(detection_filing="by_colour")


def test_a_classification_frame_needs_a_tag_and_a_bad_frame_stores_nothing(world):
    with pytest.raises(errors.InvalidArgument):
        world.core.create_frames(1, 10, [frame(0), frame(1, tag="")])
    broken = NewFrame(content=b"garbage", tag="cat", video_id=5, frame_index=2)
    with pytest.raises(errors.UnsupportedMediaType):
        world.core.create_frames(1, 10, [frame(0), broken])
    assert world.store.objects == {} and world.repository.docs == {}


def test_frames_of_another_users_project_are_refused(world):
    with pytest.raises(errors.NotFound):
        world.core.create_frames(2, 10, [frame(0)])


def test_delete_by_video_removes_only_that_videos_frames(world):
    world.core.create_frames(1, 10, [frame(0), frame(1)])
    world.core.create_frames(1, 10, [frame(0, video=15)])
    (upload,) = world.core.upload(1, 10, "cat", files("a.png"))
    assert world.core.delete_by_video(5, 10) == 2
    assert world.core.delete_by_video(5, 10) == 0
    assert sorted(i["id"] for i in world.core.list_images(1, 10)) == sorted([upload["id"], world.core.list_images(1, 10, video_id=15)[0]["id"]])
    with pytest.raises(errors.InvalidArgument):
        world.core.delete_by_video(0)


def test_dataset_streams_tags_and_bytes_and_skips_missing_objects(world):
    a, b = world.core.upload(1, 10, "cat", files("a.png", "b.png"))
    del world.store.objects[b["location"]]
    items = list(world.core.dataset(1, 10))
    assert [(doc["_id"], doc["tag"]) for doc, _ in items] == [(a["id"], "cat")]
    assert items[0][1] == world.store.objects[a["location"]]


# ---- by video --------------------------------------------------------------------------------

def test_by_video_answers_the_project_type_and_the_frames(world):
    world.core.create_frames(1, 10, [frame(20), frame(10)])
    answer = world.core.by_video(1, 5)
    assert answer["type"] == "Classification"
    assert [i["frame_index"] for i in answer["date"]] == [10, 20] and answer["images"] == answer["date"]
    with pytest.raises(errors.NotFound):
        world.core.by_video(2, 5)
    with pytest.raises(errors.NotFound):
        world.core.by_video(1, 404)


def test_by_video_without_a_video_service_goes_by_the_frames_owner():
    world = build_world(with_videos=False)
    world.core.create_frames(1, 11, [frame(0, tag="car")])
    assert world.core.by_video(1, 5)["type"] == "Detection"
    with pytest.raises(errors.NotFound):
        world.core.by_video(2, 5)
    assert world.core.by_video(1, 404) == {"type": None, "date": [], "images": []}


# ---- media -----------------------------------------------------------------------------------

def signed(url):
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    return query["expires"][0], query["signature"][0]


def test_a_signed_url_gives_the_bytes_with_their_type_and_etag(world):
    (image,) = world.core.upload(1, 10, "cat", files(("a.jpg", image_bytes("JPEG"))))
    media = world.core.media(image["id"], *signed(image["url"]))
    assert (media.key, media.content_type) == (image["location"], "image/jpeg")
    assert len(media.etag) == 32 and '"' not in media.etag
    assert 3600 <= media.max_age_s <= 3600 + 360
    assert b"".join(world.core.read_media(media)) == world.store.objects[image["location"]]


def test_a_tampered_or_expired_signature_is_refused(world):
    a, b = world.core.upload(1, 10, "cat", files("a.png", "b.png"))
    expires, signature = signed(a["url"])
    for args in [(b["id"], expires, signature), (a["id"], str(int(expires) + 1), signature),
                 (a["id"], expires, "0" * 64), (a["id"], None, None)]:
        with pytest.raises(errors.PermissionDenied):
            world.core.media(*args)
    world.core.clock = lambda: NOW + 10 * 3600
    with pytest.raises(errors.PermissionDenied) as caught:
        world.core.media(a["id"], expires, signature)
    assert caught.value.code == "signature_expired"


# ---- predictions -----------------------------------------------------------------------------

def test_predict_files_images_under_predicted_tags_with_scores(world):
    world.models.labels = [("Cat", 0.91), ("dog/puppy", 0.75)]
    images = world.core.predict(1, 10, 7, files("a.png", "b.png"))
    assert [(i["type"], i["score"]) for i in images] == [("cat", pytest.approx(0.91)), ("dog_puppy", pytest.approx(0.75))]
    assert world.models.calls == [("classify", 2)]
    assert len(world.store.objects) == 2 and images[0]["captions"] is None


def test_predict_in_a_detection_project_stores_detections(world):
    world.models.boxes = [[("car", 0.7, 1, 1, 20, 10), ("bus", 0.9, 3, 4, 50, 60)], []]
    boxed, empty = world.core.predict(1, 11, 8, files("a.png", "b.png"))
    assert (boxed["type"], boxed["captions"], boxed["boxes"]) == ("detected", ",car 0.700,bus 0.900", ",[1 1 20 10],[3 4 50 60]")
    assert boxed["score"] == pytest.approx(0.9)
    assert (empty["type"], empty["detections"], empty["captions"]) == ("detected", [], "")
    assert world.models.calls == [("detect", 2)]


def test_predictions_filed_by_top_label_when_the_server_says_so():
    world = build_world(detection_filing="top_label")
    world.models.boxes = [[("car", 0.7, 1, 1, 20, 10), ("bus", 0.9, 3, 4, 50, 60)], []]
    boxed, empty = world.core.predict(1, 11, 8, files("a.png", "b.png"))
    assert (boxed["type"], boxed["score"], empty["type"]) == ("bus", pytest.approx(0.9), "unlabeled")


def test_predict_refuses_a_model_of_another_type_or_user_and_stores_nothing(world):
    with pytest.raises(errors.InvalidArgument) as caught:
        world.core.predict(1, 10, 8, files("a.png"))
    assert caught.value.code == "model_type_mismatch"
    with pytest.raises(errors.NotFound):
        world.core.predict(1, 10, 9, files("a.png"))
    with pytest.raises(errors.NotFound):
        world.core.predict(2, 10, 7, files("a.png"))
    assert world.models.calls == [] and world.store.objects == {}


def test_predict_checks_every_file_before_asking_the_model(world):
    with pytest.raises(errors.InvalidArgument):
        world.core.predict(1, 10, 7, files("a.png", ("empty.png", b"")))
    assert world.models.calls == [] and world.store.objects == {}


def test_predict_batches_large_requests():
    data = [image_bytes("PNG") for _ in range(3)]
    world = build_world(predict_batch_bytes=2 * max(map(len, data)))
    world.models.labels = [("cat", 0.5)] * 3
    images = world.core.predict(1, 10, 7, files(*zip(["a.png", "b.png", "c.png"], data)))
    assert world.models.calls == [("classify", 2), ("classify", 1)]
    assert [i["type"] for i in images] == ["cat"] * 3


def test_predict_without_a_model_service_is_not_implemented():
    world = build_world(with_models=False)
    with pytest.raises(errors.NotImplementedYet):
        world.core.predict(1, 10, 7, files("a.png"))


def test_predict_whose_client_left_during_the_model_call_stores_nothing(world, caplog):
    client = {"connected": True}
    world.models.labels = [("cat", 0.9), ("dog", 0.8)]
    world.models.during_call = lambda: client.update(connected=False)  # the client hangs up while the model works
    with pytest.raises(errors.DeadlineExceeded) as caught:
        world.core.predict(1, 10, 7, files("a.png", "b.png"), deadline=Deadline(None, gone=lambda: not client["connected"]))
    assert "the client disconnected" in caught.value.message and caught.value.code == "deadline_exceeded"
    assert world.models.calls == [("classify", 2)]
    assert world.store.objects == {} and world.repository.list(project_id=10) == []
    assert "not storing 2 images: the client disconnected" in caplog.text


def test_predict_past_its_deadline_stores_nothing_and_asks_no_further_batch():
    a, b, c = (image_bytes("PNG") for _ in range(3))  # distinct bytes: a repeat would be stored (and predicted) once
    world = build_world(predict_batch_bytes=2 * len(a))
    world.models.labels = [("cat", 0.5)] * 3
    now = {"t": 0.0}
    world.models.during_call = lambda: now.update(t=now["t"] + 100)  # the first batch takes longer than the whole deadline
    with pytest.raises(errors.DeadlineExceeded):
        world.core.predict(1, 10, 7, files(("a.png", a), ("b.png", b), ("c.png", c)),
                           deadline=Deadline(60, clock=lambda: now["t"]))
    assert world.models.calls == [("classify", 2)]
    assert world.store.objects == {} and world.repository.list(project_id=10) == []


def test_frames_are_checked_at_a_reduced_scale_and_uploads_in_full(world, monkeypatch):
    from image_service import uploads

    decoded = []
    original = uploads.perceptual_hash
    monkeypatch.setattr(uploads, "perceptual_hash", lambda image: decoded.append(image.size) or original(image))
    data = image_bytes("JPEG", size=(80, 64))
    world.core.create_frames(1, 10, [NewFrame(content=data, tag="cat", video_id=5, frame_index=0)])
    world.core.upload(1, 10, "cat", files(("user.jpg", image_bytes("JPEG", size=(80, 64)))))
    assert decoded == [(10, 8), (80, 64)]
