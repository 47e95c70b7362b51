"""The ImageService gRPC adapter, served in-process over the core with fakes and called through
the shared typed client, as the video, model and project services call it."""
import pytest
from image_fakes import image_bytes
from image_service.app import build_grpc
from image_service.core import LabelChanges
from image_service.settings import ImageSettings
from mlstudio.common import errors
from mlstudio.common.clients import ImageClient
from mlstudio.image.v1 import image_pb2


@pytest.fixture
def client(world):
    server, port, _health = build_grpc(ImageSettings(mongo_uri="mongodb://unused", grpc_port=0), world.core)
    server.start()
    yield ImageClient(f"127.0.0.1:{port}", deadline_s=10)
    server.stop(None)


def frame(index, tag="cat", **extra):
    return image_pb2.NewImage(content=image_bytes("JPEG"), content_type="image/jpeg", tag=tag, video_id=5,
                              frame_index=index, timestamp_ms=index * 40, **extra)


def test_create_images_is_idempotent_on_video_and_frame(client, world):
    first = client.create_images(10, 1, [frame(0, score=0.5), frame(10)])
    again = client.create_images(10, 1, [frame(0, score=0.5), frame(10)])
    assert [i.id for i in again] == [i.id for i in first]
    assert len(world.repository.docs) == 2 and len(world.store.objects) == 2
    assert first[0].HasField("score") and first[0].score == pytest.approx(0.5)
    assert not first[1].HasField("score")
    assert (first[1].video_id, first[1].frame_index, first[1].timestamp_ms, first[1].tag) == (5, 10, 400, "cat")
    assert first[0].url.startswith("http://gateway.test/images/")


def test_detections_round_trip(client):
    boxes = [image_pb2.Detection(label="car", score=0.75, x1=1, y1=2, x2=30, y2=40)]
    (image,) = client.create_images(11, 1, [frame(0, tag="", detections=boxes)])
    assert image.tag == "detected"  # the default filing; the boxes keep the label
    assert [(d.label, d.x2) for d in image.detections] == [("car", 30.0)]


def test_list_images_filters_and_pages(client, world):
    client.create_images(10, 1, [frame(0), frame(1, tag="dog"), frame(2)])
    assert [i.frame_index for i in client.list_images(10, 1, tag="cat")] == [0, 2]
    assert [i.frame_index for i in client.list_images(10, 1, video_id=5)] == [0, 1, 2]
    with pytest.raises(errors.NotFound):
        client.list_images(10, 2)


def test_stream_dataset_yields_tags_and_bytes(client, world):
    created = client.create_images(10, 1, [frame(0, is_train=True), frame(1, tag="dog", score=0.99)])
    items = list(client.stream_dataset(10, 1))
    assert [(item.image_id, item.tag, item.content_type) for item in items] == [(created[0].id, "cat", "image/jpeg"), (created[1].id, "dog", "image/jpeg")]
    assert items[0].content == world.store.objects[f"images/10/{created[0].id}.jpg"]
    with pytest.raises(errors.NotFound):
        list(client.stream_dataset(10, 2))


def test_frames_below_the_review_threshold_wait_for_review_and_stay_out_of_training(client):
    checked, uncertain, unsure, pinned = client.create_images(10, 1, [
        frame(0, score=0.8), frame(1, score=0.3), frame(2, tag="dog", score=0.6), frame(3, score=0.1, is_train=True)])
    assert [i.is_train for i in (checked, uncertain, unsure, pinned)] == [True, False, False, True]
    assert [i.id for i in client.list_images(10, 1, review=True, sort="score")] == [uncertain.id, unsure.id]
    assert [i.image_id for i in client.stream_dataset(10, 1)] == [checked.id, pinned.id]
    assert len(list(client.stream_dataset(10, 1, include_unchecked=True))) == 4


def test_a_persons_box_travels_without_a_score(client, world):
    (image,) = client.create_images(11, 1, [frame(0, tag="", detections=[image_pb2.Detection(label="car", score=0.4, x2=5, y2=5)])])
    world.core.change_labels(1, image.id, LabelChanges(detections=[{"label": "Bus", "box": [1, 1, 4, 5]}]))
    (listed,) = client.list_images(11, 1)
    assert [(d.label, d.HasField("score"), d.x2) for d in listed.detections] == [("bus", False, 4.0)]
    assert listed.is_train and not listed.HasField("score")


def test_deletes_are_idempotent_and_remove_bytes(client, world):
    client.create_images(10, 1, [frame(0), frame(1)])
    assert client.delete_images_by_video(5, 10) == 2
    assert client.delete_images_by_video(5, 10) == 0
    client.create_images(10, 1, [frame(3)])
    assert client.delete_project_data(10) == 1
    assert client.delete_project_data(10) == 0
    assert world.store.objects == {} and world.repository.docs == {}


def test_bad_input_maps_to_invalid_argument(client, world):
    with pytest.raises(errors.InvalidArgument):
        client.create_images(10, 1, [image_pb2.NewImage(content=b"junk", tag="cat", video_id=5, frame_index=0)])
    with pytest.raises(errors.InvalidArgument):
        client.delete_images_by_video(0, 10)
    assert world.store.objects == {}
