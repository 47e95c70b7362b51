"""The `/images` REST adapter over the core with fakes: route precedence, parameters, multipart
uploads, response shapes, error JSON, and the signed media route's headers."""
import base64
import io
import json
import urllib.parse

import pytest
from image_fakes import image_bytes
from image_service.app import create_app
from image_service.core import NewFrame
from image_service.settings import ImageSettings


def identity(user_id):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": str(user_id)}).encode()).decode().rstrip("=")
    return {"x-jwt-payload": payload}


@pytest.fixture
def client(world):
    settings = ImageSettings(mongo_uri="mongodb://unused", max_upload_bytes=1 << 20)
    app = create_app(settings, world.core)
    return app.test_client()


def upload(client, tag, named_files, user=1, project=10):
    data = {"files": [(io.BytesIO(content), name) for name, content in named_files]}
    return client.post(f"/images/{tag}?project_id={project}", data=data, headers=identity(user), content_type="multipart/form-data")


def get(client, path, user=1):
    return client.get(path, headers=identity(user))


def test_upload_then_list_all_by_tag_and_one(client):
    created = upload(client, "Cat", [("a.png", image_bytes()), ("b.jpg", image_bytes("JPEG"))])
    assert created.status_code == 201
    images = created.get_json()
    assert [i["type"] for i in images] == ["cat", "cat"]
    assert images[0]["captions"] is None and images[0]["detections"] is None and images[0]["video"] is None
    assert [i["id"] for i in get(client, "/images/all?project_id=10").get_json()] == [i["id"] for i in images]
    assert [i["id"] for i in get(client, "/images/CAT?project_id=10&limit=1&offset=1").get_json()] == [images[1]["id"]]
    one = get(client, f"/images/{images[0]['id']}")
    assert one.status_code == 200 and one.get_json()["title"] == "a.png"


def test_static_routes_win_over_tags(client, world):
    upload(client, "cat", [("a.png", image_bytes())])
    world.core.create_frames(1, 10, [NewFrame(image_bytes("JPEG"), tag="dog", video_id=5, frame_index=3)])
    summary = get(client, "/images/type?project_id=10").get_json()
    assert [(row["name"], row["count"]) for row in summary] == [("cat", 1), ("dog", 1)]
    assert summary[0]["avatarImage"]["type"] == "cat"
    for path in ("/images/byVideo/5", "/images/byVideo?video_id=5"):
        answer = get(client, path).get_json()
        assert answer["type"] == "Classification" and [i["frame_index"] for i in answer["date"]] == [3]
        assert answer["images"] == answer["date"]


def test_reserved_words_are_not_tags_on_any_method(client):
    for method, path in [("post", "/images/all?project_id=10"), ("put", "/images/type?project_id=10&type=x"),
                         ("post", "/images/byvideo?project_id=10"), ("get", "/images/Predict?project_id=10")]:
        response = getattr(client, method)(path, headers=identity(1))
        assert response.status_code == 400, path
        assert response.get_json()["code"] == "invalid_tag"


def test_project_id_is_required_and_checked(client):
    missing = get(client, "/images/all")
    assert missing.status_code == 400 and "project_id" in missing.get_json()["message"]
    assert get(client, "/images/all?project_id=20").status_code == 404
    assert get(client, "/images/all?project_id=abc").status_code == 400
    assert get(client, "/images/all?project_id=10&limit=-1").status_code == 400
    assert get(client, "/images/all?project_id=10&offset=x").status_code == 400


def test_identity_is_required_and_user_id_must_match(client):
    assert client.get("/images/all?project_id=10").status_code == 401
    assert client.get("/images/all?project_id=10&user_id=2", headers=identity(1)).status_code == 403


def test_bad_uploads_answer_json_naming_the_file_and_store_nothing(client, world):
    cases = [
        ([("a.png", image_bytes()), ("empty.png", b"")], 400, "empty.png"),
        ([("a.png", image_bytes()), ("notes.txt", b"plain text")], 415, "notes.txt"),
        ([("huge.bmp", image_bytes("BMP", size=(40, 40)))], 413, "huge.bmp"),
    ]
    for named_files, status, name in cases:
        response = upload(client, "cat", named_files)
        assert response.status_code == status
        assert name in response.get_json()["message"]
    no_files = client.post("/images/cat?project_id=10", headers=identity(1))
    assert no_files.status_code == 400 and no_files.get_json()["code"] == "no_files"
    assert world.store.objects == {} and world.repository.docs == {}


def test_retag_rename_and_deletes(client, world):
    a, b = upload(client, "cat", [("a.png", image_bytes()), ("b.png", image_bytes())]).get_json()
    retagged = client.put(f"/images/{a['id']}?type=Dog", headers=identity(1))
    assert retagged.status_code == 200 and retagged.get_json()["type"] == "dog"
    same = client.put("/images/cat?project_id=10&type=CAT", headers=identity(1))
    assert same.status_code == 406
    merged = client.put("/images/cat?project_id=10&type=dog", headers=identity(1))
    assert sorted(i["id"] for i in merged.get_json()) == sorted([a["id"], b["id"]])
    assert client.put("/images/dog?project_id=10", headers=identity(1)).status_code == 400
    assert client.delete(f"/images/{a['id']}", headers=identity(2)).status_code == 404
    deleted = client.delete(f"/images/{a['id']}", headers=identity(1))
    assert deleted.status_code == 200 and deleted.get_json() == {"message": "success"}
    assert client.delete("/images/dog?project_id=10", headers=identity(1)).get_json() == {"message": "success"}
    assert client.delete("/images/all?project_id=10", headers=identity(1)).get_json() == {"message": "success"}
    assert world.store.objects == {} and world.repository.docs == {}


def test_predict_route(client, world):
    world.models.labels = [("Cat", 0.8)]
    data = {"files": [(io.BytesIO(image_bytes()), "a.png")], "model_id": "7"}
    response = client.post("/images/predict?project_id=10", data=data, headers=identity(1), content_type="multipart/form-data")
    assert response.status_code == 201
    (image,) = response.get_json()
    assert (image["type"], image["score"]) == ("cat", pytest.approx(0.8))
    no_model = client.post("/images/predict?project_id=10", data={"files": [(io.BytesIO(image_bytes()), "a.png")]},
                           headers=identity(1), content_type="multipart/form-data")
    assert no_model.status_code == 400


def test_a_prediction_without_a_threshold_uses_its_projects(client, world):
    world.core.projects.projects[11] = (1, "Detection", 0.65)
    world.models.boxes = [[("car", 0.75, 1.2, 2, 30, 40.6)]]
    data = {"files": [(io.BytesIO(image_bytes()), "a.png")], "model_id": "8"}
    assert client.post("/images/predict?project_id=11", data=data, headers=identity(1), content_type="multipart/form-data").status_code == 201
    assert world.models.threshold == 0.65
    world.models.boxes = [[("car", 0.75, 1.2, 2, 30, 40.6)]]
    data = {"files": [(io.BytesIO(image_bytes()), "a.png")], "model_id": "8", "threshold": "0.2"}
    assert client.post("/images/predict?project_id=11", data=data, headers=identity(1), content_type="multipart/form-data").status_code == 201
    assert world.models.threshold == 0.2  # the request's wins


def test_detection_images_show_their_boxes(client, world):
    world.models.boxes = [[("car", 0.75, 1.2, 2, 30, 40.6)]]
    data = {"files": [(io.BytesIO(image_bytes()), "a.png")], "model_id": "8", "threshold": "0.3"}
    (image,) = client.post("/images/predict?project_id=11", data=data, headers=identity(1), content_type="multipart/form-data").get_json()
    assert world.models.threshold == 0.3
    refused = client.post("/images/predict?project_id=11", data={**data, "files": [(io.BytesIO(image_bytes()), "a.png")], "threshold": "2"},
                          headers=identity(1), content_type="multipart/form-data")
    assert refused.status_code == 400 and refused.get_json() == {"message": "threshold must be a number in (0, 1], got '2'", "code": "invalid_threshold"}
    assert (image["captions"], image["boxes"]) == (",car 0.750", ",[1 2 30 41]")
    assert image["detections"] == [{"label": "car", "score": 0.75, "box": [pytest.approx(1.2), 2.0, 30.0, pytest.approx(40.6)]}]


def media_path(url):
    parts = urllib.parse.urlparse(url)
    return f"{parts.path}?{parts.query}"


def test_signed_media_needs_no_token_and_has_caching_headers(client, world):
    (image,) = upload(client, "cat", [("a.jpg", image_bytes("JPEG"))]).get_json()
    response = client.get(media_path(image["url"]))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.data == world.store.objects[image["location"]]
    assert response.headers["Content-Length"] == str(len(response.data))
    assert response.headers["Cache-Control"].startswith("private, max-age=")
    etag = response.headers["ETag"]
    again = client.get(media_path(image["url"]), headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    other = client.get(media_path(image["url"]), headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200


def test_tampered_media_urls_are_refused(client):
    (image,) = upload(client, "cat", [("a.png", image_bytes())]).get_json()
    path = media_path(image["url"])
    tampered = path.replace("signature=", "signature=0")
    response = client.get(tampered)
    assert response.status_code == 403 and response.get_json()["code"] == "signature_invalid"
    assert client.get(f"/images/{image['id']}/file").status_code == 403


def documented(shape):
    """The routes' documented models (`declare_models`), by name."""
    from flask_restx import Namespace
    from image_service.api.images import declare_models

    image_model, tag_model, video_images_model = declare_models(Namespace("documented"))
    return {"Image": image_model, "Tag": tag_model, "VideoImages": video_images_model}[shape]


def test_answers_are_what_marshalling_with_the_documented_models_gives(client, world):
    """The routes answer the core's dicts as they are (no per-field marshalling): each must be
    exactly what flask-restx would make of it with the model the OpenAPI docs show, for every
    kind of image (upload, Detection with boxes, video frame)."""
    from flask_restx import marshal

    upload(client, "cat", [("a.png", image_bytes())])
    world.models.boxes = [[("car", 0.75, 1.2, 2, 30, 40.6)]]
    client.post("/images/predict?project_id=11", data={"files": [(io.BytesIO(image_bytes()), "d.png")], "model_id": "8"},
                headers=identity(1), content_type="multipart/form-data")
    world.core.create_frames(1, 10, [NewFrame(image_bytes("JPEG"), tag="dog", video_id=5, frame_index=3, timestamp_ms=100, score=0.5)])
    images = get(client, "/images/all?project_id=10").get_json() + get(client, "/images/all?project_id=11").get_json()
    assert len(images) == 3 and any(image["detections"] for image in images) and any(image["video"] for image in images)
    for image in images:
        assert image == marshal(image, documented("Image")) and list(image) == list(documented("Image"))
        assert get(client, f"/images/{image['id']}").get_json() == image
    tags = get(client, "/images/type?project_id=10").get_json()
    assert tags == marshal(tags, documented("Tag")) and [row["name"] for row in tags] == ["cat", "dog"]
    frames = get(client, "/images/byVideo/5").get_json()
    assert frames == marshal(frames, documented("VideoImages"))


def test_the_openapi_docs_describe_every_field_of_the_lists(client):
    spec = client.get("/docs/images/swagger.json").get_json()
    assert set(spec["definitions"]["Image"]["properties"]) == set(documented("Image"))
    assert set(spec["definitions"]["Tag"]["properties"]) == {"name", "count", "avatarImage"}
    listed = spec["paths"]["/images/all"]["get"]
    assert listed["responses"]["200"]["schema"] == {"type": "array", "items": {"$ref": "#/definitions/Image"}}
    assert "after_id" in {param["name"] for param in listed["parameters"]}
    assert spec["paths"]["/images/{tag}"]["post"]["responses"]["201"]["schema"]["items"] == {"$ref": "#/definitions/Image"}


def test_keyset_pages_follow_after_id(client):
    created = upload(client, "cat", [(f"{n}.png", image_bytes()) for n in range(5)]).get_json()
    ids = [image["id"] for image in created]
    pages, after = [], 0
    for _ in range(4):  # three pages and an empty one
        page = get(client, f"/images/all?project_id=10&limit=2&after_id={after}").get_json()
        pages.append([image["id"] for image in page])
        after = page[-1]["id"] if page else after
    assert pages == [ids[0:2], ids[2:4], ids[4:5], []]
    assert [i["id"] for i in get(client, f"/images/CAT?project_id=10&after_id={ids[2]}").get_json()] == ids[3:]
    assert [i["id"] for i in get(client, f"/images/all?project_id=10&after_id={ids[0]}&offset=1&limit=1").get_json()] == [ids[2]]
    bad = get(client, "/images/all?project_id=10&after_id=x")
    assert bad.status_code == 400 and "after_id" in bad.get_json()["message"]


def test_a_videos_images_refuse_after_id_for_they_are_in_frame_order(client, world):
    world.core.create_frames(1, 10, [NewFrame(image_bytes("JPEG"), tag="dog", video_id=5, frame_index=3)])
    refused = get(client, "/images/byVideo/5?after_id=1")
    assert refused.status_code == 400
    assert refused.get_json() == {"message": "after_id pages lists in id order; a video's images are in frame order: "
                                             "use limit and offset", "code": "invalid_page"}
    by_score = get(client, "/images/all?project_id=10&sort=score&after_id=1")
    assert by_score.status_code == 400
    assert by_score.get_json()["message"] == "after_id pages lists in id order; sort=score lists in score order: use limit and offset"
