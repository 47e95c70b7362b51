"""Checked labels (`isTrain`), the review list, confirmations and a person's boxes, on the core
with fakes and through the REST adapter: who checks what, what waits for review and in which
order, and that a bad box is refused by name with nothing changed."""
import base64
import io
import json

import pytest
from image_fakes import image_bytes
from image_service.app import create_app
from image_service.core import LabelChanges, NewFrame, Page, Selection
from image_service.detections import person_boxes
from image_service.settings import ImageSettings
from image_service.uploads import UploadedFile
from mlstudio.common import errors

# image_bytes() makes 8x6 pictures.
WIDTH, HEIGHT = 8, 6


def frame(index, score=None, tag="cat", video=5, **extra):
    return NewFrame(image_bytes("JPEG"), tag=tag, video_id=video, frame_index=index, timestamp_ms=index * 40, score=score, **extra)


def detection_frame(index, *boxes):
    """A Detection project's frame (project 11, video 7) with (label, score) boxes."""
    found = [{"label": label, "score": score, "box": [1.0, 1.0, 4.0, 4.0]} for label, score in boxes]
    return NewFrame(image_bytes("JPEG"), video_id=7, frame_index=index, detections=found)


def review_list(world, project=10, **selection):
    return [(i["id"], i["score"]) for i in world.core.list_images(1, project, selection=Selection(review=True, **selection))]


# ---- who checks what -------------------------------------------------------------------------

def test_uploads_are_checked_and_model_labels_are_checked_from_the_review_threshold(world):
    (uploaded,) = world.core.upload(1, 10, "cat", [UploadedFile("a.png", io.BytesIO(image_bytes()))])
    sure, at, unsure = world.core.create_frames(1, 10, [frame(0, 0.95), frame(1, 0.8), frame(2, 0.79)])
    assert [i["isTrain"] for i in (uploaded, sure, at, unsure)] == [True, True, True, False]


def test_the_projects_own_threshold_decides(world):
    world.projects.review_thresholds[10] = 0.99
    assert [i["isTrain"] for i in world.core.create_frames(1, 10, [frame(0, 0.95), frame(1, 0.995)])] == [False, True]
    world.projects.review_thresholds[10] = 0.0
    assert world.core.create_frames(1, 10, [frame(2, 0.01)])[0]["isTrain"] is True


def test_a_detection_frame_is_checked_by_its_best_box_and_one_with_nothing_found_waits(world):
    sure, unsure, empty = world.core.create_frames(1, 11, [
        detection_frame(0, ("car", 0.9), ("bus", 0.2)), detection_frame(1, ("car", 0.6)), detection_frame(2)])
    assert [(i["isTrain"], i["score"]) for i in (sure, unsure, empty)] == [(True, 0.9), (False, 0.6), (False, None)]


def test_a_sender_may_say_a_frame_is_checked_and_a_tag_without_a_score_is_a_persons(world):
    pinned, unpinned, persons = world.core.create_frames(1, 10, [frame(0, 0.1, is_train=True), frame(1, 0.99, is_train=False),
                                                                 frame(2)])
    assert [i["isTrain"] for i in (pinned, unpinned, persons)] == [True, False, True]


def test_predictions_below_the_threshold_wait_for_review(world):
    world.models.labels = [("Cat", 0.97), ("dog", 0.55)]
    sure, unsure = world.core.predict(1, 10, 7, [UploadedFile(f"{n}.png", io.BytesIO(image_bytes())) for n in "ab"])
    assert [(i["type"], i["isTrain"]) for i in (sure, unsure)] == [("cat", True), ("dog", False)]


def test_images_stored_before_the_field_existed_count_as_checked(world):
    (image,) = world.core.create_frames(1, 10, [frame(0, 0.1)])
    world.repository.docs[image["id"]].pop("is_train")
    assert world.core.get(1, image["id"])["isTrain"] is True and review_list(world) == []


# ---- the review list ---------------------------------------------------------------------------

def test_the_review_list_has_only_unchecked_images_lowest_score_first_and_pages(world):
    images = world.core.create_frames(1, 10, [frame(0, 0.7), frame(1, 0.9), frame(2, 0.2), frame(3, 0.5, tag="dog")])
    ids = {i["frame_index"]: i["id"] for i in images}
    assert review_list(world, by_score=True) == [(ids[2], 0.2), (ids[3], 0.5), (ids[0], 0.7)]
    assert review_list(world) == [(ids[0], 0.7), (ids[2], 0.2), (ids[3], 0.5)]  # id order without sort=score
    page = world.core.list_images(1, 10, page=Page(limit=1, offset=1), selection=Selection(review=True, by_score=True))
    assert [i["id"] for i in page] == [ids[3]]
    assert [i["id"] for i in world.core.list_images(1, 10, tag="cat", selection=Selection(review=True))] == [ids[0], ids[2]]
    by_video = world.core.by_video(1, 5, selection=Selection(review=True, by_score=True))
    assert [i["id"] for i in by_video["images"]] == [ids[2], ids[3], ids[0]] and by_video["date"] == by_video["images"]


def test_confirming_or_retagging_takes_an_image_off_the_review_list(world):
    low, mid, high = world.core.create_frames(1, 10, [frame(0, 0.2), frame(1, 0.4), frame(2, 0.6)])
    confirmed = world.core.change_labels(1, low["id"], LabelChanges(checked=True))
    assert (confirmed["isTrain"], confirmed["type"], confirmed["score"]) == (True, "cat", 0.2)
    retagged = world.core.retag(1, mid["id"], "Dog")
    assert (retagged["isTrain"], retagged["type"]) == (True, "dog")
    assert review_list(world, by_score=True) == [(high["id"], 0.6)]
    # And back to review, when a person says so.
    world.core.change_labels(1, low["id"], LabelChanges(checked=False))
    assert review_list(world, by_score=True) == [(low["id"], 0.2), (high["id"], 0.6)]


def test_training_streams_checked_images_unless_asked_for_all(world):
    checked, unchecked = world.core.create_frames(1, 10, [frame(0, 0.9), frame(1, 0.1)])
    assert [doc["_id"] for doc, _ in world.core.dataset(1, 10)] == [checked["id"]]
    assert [doc["_id"] for doc, _ in world.core.dataset(1, 10, include_unchecked=True)] == [checked["id"], unchecked["id"]]


def test_a_change_with_nothing_in_it_is_refused(world):
    (image,) = world.core.create_frames(1, 10, [frame(0, 0.1)])
    with pytest.raises(errors.InvalidArgument, match="nothing to change"):
        world.core.change_labels(1, image["id"], LabelChanges())


def test_another_users_image_cannot_be_confirmed(world):
    (image,) = world.core.create_frames(1, 10, [frame(0, 0.1)])
    with pytest.raises(errors.NotFound):
        world.core.change_labels(2, image["id"], LabelChanges(checked=True))
    assert world.repository.docs[image["id"]]["is_train"] is False


# ---- a person's boxes --------------------------------------------------------------------------

def test_corrected_boxes_replace_the_models_check_the_image_and_show_in_both_forms(world):
    (image,) = world.core.create_frames(1, 11, [detection_frame(0, ("car", 0.6))])
    corrected = world.core.change_labels(1, image["id"], LabelChanges(detections=[
        {"label": "Bus", "box": [0, 0.5, 8, 6]}, {"label": "car", "box": [2.4, 1, 3.6, 2]}]))
    assert corrected["detections"] == [{"label": "bus", "score": None, "box": [0.0, 0.5, 8.0, 6.0]},
                                       {"label": "car", "score": None, "box": [2.4, 1.0, 3.6, 2.0]}]
    assert (corrected["captions"], corrected["boxes"]) == (",bus 1.000,car 1.000", ",[0 1 8 6],[2 1 4 2]")
    assert (corrected["isTrain"], corrected["score"], corrected["type"]) == (True, None, "detected")
    world.core.videos.videos[7] = (1, 11)
    assert world.core.by_video(1, 7)["images"] == [corrected] == [world.core.get(1, image["id"])]


def test_no_boxes_at_all_is_a_correction_too(world):
    (image,) = world.core.create_frames(1, 11, [detection_frame(0, ("car", 0.6))])
    cleared = world.core.change_labels(1, image["id"], LabelChanges(detections=[]))
    assert (cleared["detections"], cleared["captions"], cleared["boxes"], cleared["isTrain"]) == ([], "", "", True)


@pytest.mark.parametrize("box, problem", [
    ([0, 0, 9, 6], "detection 2 {'label': 'car', 'box': [0, 0, 9, 6]}: box is outside the 8x6 image"),
    ([-1, 0, 4, 4], "box is outside the 8x6 image"),
    ([4, 0, 4, 4], "box is empty (it needs x1 < x2 and y1 < y2)"),
    ([0, 5, 4, 2], "box is empty"),
    ([0, 0, 4], "box must be four finite numbers"),
    ([0, 0, "4", 4], "box must be four finite numbers"),
    ([0, 0, float("inf"), 4], "box must be four finite numbers"),
    ([0, 0, True, 4], "box must be four finite numbers"),
])
def test_a_bad_box_is_refused_by_name_and_nothing_changes(world, box, problem):
    (image,) = world.core.create_frames(1, 11, [detection_frame(0, ("car", 0.6))])
    before = world.core.get(1, image["id"])
    with pytest.raises(errors.InvalidArgument, match=problem.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as raised:
        world.core.change_labels(1, image["id"], LabelChanges(detections=[{"label": "car", "box": [1, 1, 2, 2]},
                                                                          {"label": "car", "box": box}]))
    assert raised.value.code == "invalid_box"
    assert world.core.get(1, image["id"]) == before


@pytest.mark.parametrize("raw, problem", [
    ("car", "detections must be a list"),
    ([{"box": [0, 0, 1, 1]}], "detection 1 {'box': [0, 0, 1, 1]}: expected {label, box"),
    ([{"label": "all", "box": [0, 0, 1, 1]}], "its label is not a valid tag"),
    ([{"label": "a/b", "box": [0, 0, 1, 1]}], "its label is not a valid tag"),
    ([{"label": "car", "box": [0, 0, 1, 1], "colour": "red"}], "unknown fields ['colour']"),
    ([{"label": "car", "box": [0, 0, 1, 1]}] * 501, "at most 500 detections"),
])
def test_boxes_and_labels_follow_the_rules(raw, problem):
    with pytest.raises(errors.InvalidArgument) as raised:
        person_boxes(raw, WIDTH, HEIGHT)
    assert problem in raised.value.message


def test_boxes_on_the_images_edges_are_inside():
    assert person_boxes([{"label": "car", "box": [0, 0, WIDTH, HEIGHT]}], WIDTH, HEIGHT)[0]["box"] == [0.0, 0.0, 8.0, 6.0]


def test_a_classification_image_has_no_boxes_to_correct(world):
    (image,) = world.core.create_frames(1, 10, [frame(0, 0.1)])
    with pytest.raises(errors.InvalidArgument, match="Classification project, which has no boxes"):
        world.core.change_labels(1, image["id"], LabelChanges(detections=[]))
    assert world.repository.docs[image["id"]]["is_train"] is False


def test_an_image_stored_without_its_size_is_measured_from_its_bytes(world):
    (image,) = world.core.create_frames(1, 11, [detection_frame(0, ("car", 0.6))])
    world.repository.docs[image["id"]].update(width=None, height=None)
    with pytest.raises(errors.InvalidArgument, match="outside the 8x6 image"):
        world.core.change_labels(1, image["id"], LabelChanges(detections=[{"label": "car", "box": [0, 0, 9, 6]}]))


# ---- through HTTP ------------------------------------------------------------------------------

def identity(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


@pytest.fixture
def client(world):
    return create_app(ImageSettings(mongo_uri="mongodb://unused", max_upload_bytes=1 << 20), world.core).test_client()


def test_review_and_sort_parameters_and_put_bodies_over_http(client, world):
    low, high, sure = world.core.create_frames(1, 10, [frame(0, 0.3), frame(1, 0.6), frame(2, 0.9)])
    listed = client.get("/images/all?project_id=10&review=true&sort=score", headers=identity(1))
    assert [i["id"] for i in listed.get_json()] == [low["id"], high["id"]]
    assert [i["id"] for i in client.get("/images/cat?project_id=10&review=1&sort=score&limit=1&offset=1",
                                        headers=identity(1)).get_json()] == [high["id"]]
    assert [i["id"] for i in client.get("/images/byVideo/5?review=true", headers=identity(1)).get_json()["images"]] == [low["id"], high["id"]]
    confirmed = client.put(f"/images/{low['id']}", json={"checked": True}, headers=identity(1))
    assert confirmed.status_code == 200 and confirmed.get_json()["isTrain"] is True
    retagged = client.put(f"/images/{high['id']}?type=Dog", headers=identity(1))  # the original's retag
    assert retagged.status_code == 200 and (retagged.get_json()["type"], retagged.get_json()["isTrain"]) == ("dog", True)
    assert client.get("/images/all?project_id=10&review=true", headers=identity(1)).get_json() == []


@pytest.mark.parametrize("path, body, message", [
    ("/images/all?project_id=10&sort=name", None, "sort must be one of id, score, got 'name'"),
    ("/images/all?project_id=10&review=maybe", None, "review must be true or false, got 'maybe'"),
    ("/images/{id}", {"checked": "perhaps"}, "checked must be true or false"),
    ("/images/{id}", {}, "nothing to change"),
    ("/images/{id}", {"detections": [{"label": "car", "box": [0, 0, 100, 4]}]}, "detection 1"),
])
def test_bad_parameters_answer_400_saying_what_is_wrong(client, world, path, body, message):
    (image,) = world.core.create_frames(1, 11, [detection_frame(0, ("car", 0.6))])
    before = world.core.get(1, image["id"])
    url = path.format(id=image["id"])
    response = client.get(url, headers=identity(1)) if body is None else client.put(url, json=body, headers=identity(1))
    assert response.status_code == 400 and message in response.get_json()["message"]
    assert world.core.get(1, image["id"]) == before


def test_a_box_correction_over_http_answers_the_corrected_image(client, world):
    (image,) = world.core.create_frames(1, 11, [detection_frame(0, ("car", 0.6))])
    answer = client.put(f"/images/{image['id']}", json={"detections": [{"label": "bus", "box": [1, 2, 3, 4]}]}, headers=identity(1))
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["captions"], body["boxes"], body["detections"][0]["score"], body["isTrain"]) == (",bus 1.000", ",[1 2 3 4]", None, True)


def test_the_openapi_docs_describe_the_review_parameters_and_the_put_body(client):
    spec = client.get("/docs/images/swagger.json").get_json()
    for path in ("/images/all", "/images/{tag}", "/images/byVideo/{video_id}"):
        assert {"review", "sort"} <= {p["name"] for p in spec["paths"][path]["get"]["parameters"]}
    assert set(spec["definitions"]["LabelChanges"]["properties"]) == {"type", "detections", "checked"}
    assert "review" in spec["definitions"]["Image"]["properties"]["isTrain"]["description"]


def test_the_openapi_docs_list_the_relabelling_routes(world):
    app = create_app(ImageSettings(mongo_uri="mongodb://unused"), world.core, relabels=object())
    paths = app.test_client().get("/docs/images/swagger.json").get_json()["paths"]
    assert {"/projects/{project_id}/relabels", "/projects/{project_id}/relabels/{relabel_id}",
            "/projects/{project_id}/relabels/{relabel_id}/cancel"} <= set(paths)
    assert set(paths["/projects/{project_id}/relabels"]) >= {"get", "post"}
