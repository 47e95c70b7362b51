"""Reviewing a model's labels through the gateway, against the real stack: a video labelled by a
model leaves its uncertain frames in a review list, lowest score first; confirming or retagging
takes them off it and into the training set; a Detection frame's corrected boxes show in
`GET /images/<id>`, the byVideo listing and the video's page, structured and as the original's
strings; a box outside the image is refused and changes nothing; re-labelling changes only the
labels waiting for review, with progress."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from mlstudio.common.clients import ImageClient
from test_videos import Account, Owner, media  # noqa: F401  (`media`: the sample models, a fixture)

# The sample light/dark model's scores are known exactly (model_service.sample_models): a frame of
# mean pixel 255 or 0 is 0.99 sure, 220 0.98; 100 0.75 (dark), 145 0.67 (light), 128 0.50. Video
# coding moves a grey level by a few units, a score by a few hundredths: the gaps are wider.
LEVELS = (255, 145, 0, 128, 220, 100)
INTERVAL = 10
REVIEW_THRESHOLD = 0.8  # the project default


def graded_video(path, levels=LEVELS, size=(64, 48)):
    """INTERVAL frames of each grey level in turn, so sampling every INTERVAL-th frame takes one per level."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    for level in levels:
        for _ in range(INTERVAL):
            writer.write(np.full((size[1], size[0], 3), level, np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def account(stack_factory, api, register, media):  # noqa: F811
    return Account(stack_factory(AUTH_REQUIRED="true"), api, register, media, types=("Classification", "Detection"))


def image_client(stack) -> ImageClient:
    return ImageClient(f"127.0.0.1:{stack.ports['IMAGE_GRPC_PORT']}", deadline_s=30)


def review_list(owner, **params) -> list[dict]:
    response = owner.session.get("/images/all", params=owner.params(review="true", sort="score", **params))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_model_labelled_video_leaves_its_uncertain_frames_for_review_lowest_score_first(stack, account, tmp_path):
    owner = Owner(account)
    answer = owner.upload(graded_video(tmp_path / "graded.mp4"), interval=INTERVAL, wait="true").json()
    assert answer["video"]["status"] == "done", answer["video"]
    frames = answer["images"]
    assert len(frames) == len(LEVELS)
    uncertain = sorted((f for f in frames if f["score"] < REVIEW_THRESHOLD), key=lambda f: f["score"])
    assert [f["frame_index"] // INTERVAL for f in uncertain] == [3, 1, 5]  # levels 128, 145, 100
    assert all(f["isTrain"] is (f["score"] >= REVIEW_THRESHOLD) for f in frames)

    listed = review_list(owner)
    assert [i["id"] for i in listed] == [f["id"] for f in uncertain]
    assert [i["score"] for i in listed] == sorted(i["score"] for i in listed) and not any(i["isTrain"] for i in listed)
    assert [i["id"] for i in review_list(owner, limit=1, offset=1)] == [uncertain[1]["id"]]
    by_video = owner.session.get(f"/images/byVideo/{answer['video']['id']}", params={"review": "true", "sort": "score"}).json()
    assert [i["id"] for i in by_video["images"]] == [f["id"] for f in uncertain]

    # Training reads checked images only: the uncertain frames are not in it yet.
    client = image_client(stack)
    trained_on = {item.image_id for item in client.stream_dataset(owner.project_id, owner.user_id)}
    assert trained_on == {f["id"] for f in frames} - {f["id"] for f in uncertain}

    lowest, middle, highest = uncertain
    confirmed = owner.session.put(f"/images/{lowest['id']}", json={"checked": True})
    assert confirmed.status_code == 200 and (confirmed.json()["isTrain"], confirmed.json()["type"]) == (True, lowest["type"])
    retagged = owner.session.put(f"/images/{middle['id']}", params={"type": "dark"})  # the original's retag
    assert retagged.status_code == 200 and (retagged.json()["isTrain"], retagged.json()["type"]) == (True, "dark")
    assert [i["id"] for i in review_list(owner)] == [highest["id"]]

    # Retraining uses them now, and the video's page shows them checked.
    trained_on = {item.image_id: item.tag for item in client.stream_dataset(owner.project_id, owner.user_id)}
    assert trained_on[lowest["id"]] == lowest["type"] and trained_on[middle["id"]] == "dark" and highest["id"] not in trained_on
    shown = {i["id"]: i["isTrain"] for i in owner.video(answer["video"]["id"])["images"]}
    assert (shown[lowest["id"]], shown[middle["id"]], shown[highest["id"]]) == (True, True, False)


def test_a_stricter_project_threshold_sends_more_frames_to_review(stack, account, tmp_path):
    owner = Owner(account)
    changed = owner.session.put(f"/projects/{owner.project_id}", json={"review_threshold": 0.99})
    assert changed.status_code == 200 and changed.json()["review_threshold"] == 0.99
    # 255 scores 0.994, 220 0.976: under the default both are checked.
    answer = owner.upload(graded_video(tmp_path / "graded.mp4", levels=(255, 220)), interval=INTERVAL, wait="true").json()
    assert [(f["frame_index"], f["isTrain"]) for f in answer["images"]] == [(0, True), (INTERVAL, False)]
    refused = owner.session.put(f"/projects/{owner.project_id}", json={"review_threshold": 2})
    assert refused.status_code == 400 and "review_threshold must be a number from 0 to 1" in refused.json()["message"]


def test_correcting_a_detection_frames_boxes_shows_everywhere_and_a_box_outside_is_refused(stack, account, media):  # noqa: F811
    owner = Owner(account, project_type="Detection")
    answer = owner.upload(media["light_dark"], interval=50, wait="true").json()
    assert answer["video"]["status"] == "done", answer["video"]
    video_id = answer["video"]["id"]
    dark = answer["images"][-1]  # nothing found: no score, waiting for review
    assert (dark["detections"], dark["score"], dark["isTrain"]) == ([], None, False)
    assert dark["id"] in [i["id"] for i in review_list(owner)]

    corrected = owner.session.put(f"/images/{dark['id']}", json={"detections": [
        {"label": "Bottle", "box": [10, 5, 40.4, 30]}, {"label": "can", "box": [0, 0, 64, 48]}]})
    assert corrected.status_code == 200, corrected.text
    expected = {"detections": [{"label": "bottle", "score": None, "box": [10.0, 5.0, 40.4, 30.0]},
                               {"label": "can", "score": None, "box": [0.0, 0.0, 64.0, 48.0]}],
                "captions": ",bottle 1.000,can 1.000", "boxes": ",[10 5 40 30],[0 0 64 48]", "isTrain": True, "type": "detected"}

    def shown(image):
        return {key: image[key] for key in expected}

    listed = owner.session.get(f"/images/byVideo/{video_id}").json()
    pages = [corrected.json(), owner.session.get(f"/images/{dark['id']}").json(),
             next(i for i in listed["date"] if i["id"] == dark["id"]), next(i for i in listed["images"] if i["id"] == dark["id"]),
             next(i for i in owner.video(video_id)["images"] if i["id"] == dark["id"])]
    assert [shown(image) for image in pages] == [expected] * len(pages)
    assert dark["id"] not in [i["id"] for i in review_list(owner)]

    outside = owner.session.put(f"/images/{dark['id']}", json={"detections": [
        {"label": "bottle", "box": [1, 1, 5, 5]}, {"label": "can", "box": [0, 0, 65, 48]}]})
    assert outside.status_code == 400 and outside.json()["code"] == "invalid_box"
    assert "detection 2" in outside.json()["message"] and "outside the 64x48 image" in outside.json()["message"]
    assert shown(owner.session.get(f"/images/{dark['id']}").json()) == expected


def images_without_urls(owner) -> dict[int, dict]:
    """The project's images by id, without their signed URLs (whose expiry moves on)."""
    return {i["id"]: {k: v for k, v in i.items() if k != "url"} for i in owner.session.get("/images/all", params=owner.params()).json()}


def test_relabelling_changes_only_unchecked_images_with_progress(stack, account, tmp_path):
    owner = Owner(account)
    answer = owner.upload(graded_video(tmp_path / "graded.mp4"), interval=INTERVAL, wait="true").json()
    uncertain = sorted((f for f in answer["images"] if not f["isTrain"]), key=lambda f: f["score"])
    assert len(uncertain) == 3
    confirmed = owner.session.put(f"/images/{uncertain[0]['id']}", json={"type": "light"}).json()
    # A laxer project: the same model's labels of the two left now pass the threshold.
    owner.session.put(f"/projects/{owner.project_id}", json={"review_threshold": 0.6})
    before = images_without_urls(owner)

    started = owner.session.post(f"/projects/{owner.project_id}/relabels", json={"model_id": owner.model_id})
    assert started.status_code == 202, started.text
    run = started.json()
    assert (run["scope"], run["status"]) == ("review", "queued")
    deadline = time.monotonic() + 120
    while run["status"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, run
        time.sleep(0.3)
        run = owner.session.get(f"/projects/{owner.project_id}/relabels/{run['id']}").json()
    assert (run["status"], run["progress"], run["changed"]) == ("done", {"done": 2, "total": 2}, 2)

    after = images_without_urls(owner)
    relabelled = {f["id"] for f in uncertain[1:]}
    assert all(after[i]["isTrain"] for i in relabelled)  # 0.67 and 0.75 reach 0.6
    assert {i: image for i, image in after.items() if i not in relabelled} == {
        i: image for i, image in before.items() if i not in relabelled}  # every other image as it was
    assert after[confirmed["id"]]["type"] == "light"
    assert review_list(owner) == []
    listed = owner.session.get(f"/projects/{owner.project_id}/relabels").json()
    assert [r["id"] for r in listed] == [run["id"]]
    refused = owner.session.post(f"/projects/{owner.project_id}/relabels", json={"model_id": owner.model_id, "scope": "some"})
    assert refused.status_code == 400 and "scope must be one of review, all" in refused.json()["message"]
