"""Video rules with fakes: upload checks (nothing stored when one fails), the processing state
readers see, and deletes that stop the job first."""
import shutil
from datetime import datetime, timezone

import pytest

from mlstudio.common import errors, jobs
from video_service.core import SPLIT_JOB, UploadedFile, job_id
from video_service.upload_form import upload_options


def options(**fields):
    return upload_options({"model_id": "7", "interval": "10", **fields}, "clip.mp4", 1)


def uploaded(path, tmp_path, content_type="video/mp4"):
    copy = tmp_path / "spooled"
    shutil.copy(path, copy)
    return UploadedFile(copy, "clip.mp4", content_type)


def nothing_stored(world):
    return world.repository.docs == {} and world.jobs.docs == {} and world.store.list_keys("") == []


def test_upload_stores_the_file_records_the_video_and_queues_its_job(world, light_dark_video, tmp_path):
    answer = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))
    video = answer["video"]
    assert answer["images"] == []
    assert (video["status"], video["progress"], video["interval"], video["model"], video["type"]) == ("queued", {"done": 0, "total": 20}, 10, 7, "Classification")
    assert (video["frame_count"], video["fps"], video["title"], video["user"], video["project"]) == (200, 25.0, "clip.mp4", 1, 10)
    assert video["url"].startswith(f"http://gateway.test/videos/{video['id']}/file?expires=")
    assert world.store.get_bytes(world.repository.docs[video["id"]]["key"]) == light_dark_video.read_bytes()
    job = world.jobs.get(job_id(video["id"]))
    assert (job.kind, job.payload) == (SPLIT_JOB, {"video_id": video["id"], "project_id": 10, "user_id": 1})
    assert (video["dedupe"], video["duplicates_skipped"]) == (False, None)


def test_the_local_store_takes_the_spooled_upload_by_rename(world, light_dark_video, tmp_path):
    """The video is not copied again: the spooled file becomes the stored object."""
    spooled = uploaded(light_dark_video, tmp_path)
    inode = spooled.path.stat().st_ino
    video = world.core.upload(1, 10, options(), spooled)["video"]
    key = world.repository.docs[video["id"]]["key"]
    assert not spooled.path.exists()
    assert (world.store.root / key).stat().st_ino == inode


def test_an_upload_with_dedupe_keeps_it_for_its_job_and_shows_the_skipped_count(world, light_dark_video, tmp_path):
    video = world.core.upload(1, 10, options(dedupe="true"), uploaded(light_dark_video, tmp_path))["video"]
    assert world.repository.docs[video["id"]]["dedupe"] is True
    assert (video["dedupe"], video["duplicates_skipped"]) == (True, 0)


@pytest.mark.parametrize("user_id, project_id, model_id, error", [
    (2, 10, "7", errors.NotFound),          # someone else's project
    (1, 99, "7", errors.NotFound),          # no such project
    (1, 10, "9", errors.NotFound),          # someone else's private model
    (1, 10, "404", errors.NotFound),        # no such model
    (1, 10, "1000001", errors.NotFound),    # ids above a million are looked up, not refused as malformed
    (1, 10, "8", errors.InvalidArgument),   # a Detection model for a Classification project
    (1, 10, "6", errors.InvalidArgument),   # a model still training
])
def test_upload_refuses_projects_and_models_the_caller_cannot_use(world, light_dark_video, tmp_path, user_id, project_id, model_id, error):
    with pytest.raises(error):
        world.core.upload(user_id, project_id, options(model_id=model_id), uploaded(light_dark_video, tmp_path))
    assert nothing_stored(world)


def test_a_public_detection_model_serves_a_detection_project(world, light_dark_video, tmp_path):
    video = world.core.upload(1, 11, options(model_id="8"), uploaded(light_dark_video, tmp_path))["video"]
    assert video["type"] == "Detection"


def test_a_detection_threshold_goes_with_the_video_to_its_detector(world, light_dark_video, tmp_path):
    from video_fakes import FakeLabeller
    from video_service.pipeline import FramePipeline
    from video_service.split_job import split_request

    video_id = world.core.upload(1, 11, options(model_id="8", threshold="0.3"), uploaded(light_dark_video, tmp_path))["video"]["id"]
    labeller = FakeLabeller()
    FramePipeline(labeller, world.images, batch_size=8).run(split_request(world.repository.docs[video_id]), light_dark_video, lambda *a: None)
    assert labeller.threshold == 0.3
    default = world.core.upload(1, 11, options(model_id="8"), uploaded(light_dark_video, tmp_path))["video"]["id"]
    assert split_request(world.repository.docs[default]).threshold == 0.0  # the model's own default


def test_a_video_without_a_threshold_takes_its_projects(world, light_dark_video, tmp_path):
    from video_service.split_job import split_request

    world.core.projects.projects[11] = (1, "Detection", 0.35)
    own = world.core.upload(1, 11, options(model_id="8"), uploaded(light_dark_video, tmp_path))["video"]["id"]
    asked = world.core.upload(1, 11, options(model_id="8", threshold="0.7"), uploaded(light_dark_video, tmp_path))["video"]["id"]
    assert split_request(world.repository.docs[own]).threshold == 0.35
    assert split_request(world.repository.docs[asked]).threshold == 0.7  # the request's wins


def test_upload_refuses_files_that_are_no_decodable_video(world, tmp_path, light_dark_video):
    text = tmp_path / "notes.txt"
    text.write_bytes(b"not a video at all\n" * 20)
    with pytest.raises(errors.UnsupportedMediaType):
        world.core.upload(1, 10, options(), UploadedFile(text, "notes.txt", "text/plain"))
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(light_dark_video.read_bytes()[:2000])
    with pytest.raises(errors.Unprocessable):
        world.core.upload(1, 10, options(), UploadedFile(truncated, "cut.mp4", "video/mp4"))
    assert nothing_stored(world)


@pytest.mark.parametrize("fields, message", [
    ({"interval": "0"}, "interval must be a positive integer"),
    ({"interval": "-3"}, "interval must be a positive integer"),
    ({"interval": "ten"}, "interval must be a positive integer"),
    ({"interval_ms": "0"}, "interval_ms must be a positive integer"),
    ({"model_id": ""}, "model_id is required"),
    ({"model_id": "x"}, "model_id must be a positive integer"),
    ({"wait": "maybe"}, "wait must be true or false"),
    ({"interval": ""}, "field interval is empty: give a positive integer N to sample every N-th frame, or leave the field out"),
    ({"interval": "  "}, "field interval is empty"),
    ({"interval_ms": ""}, "field interval_ms is empty"),
    ({"interval_ms": "", "interval": "10"}, "field interval_ms is empty"),
    ({"wait": ""}, "field wait is empty: give true or false"),
    ({"model_id": " "}, "model_id is required"),
    ({"dedupe": "sometimes"}, "dedupe must be true or false"),
    ({"threshold": "1.5"}, r"threshold must be a number in \(0, 1\], got '1.5'"),
    ({"threshold": "0"}, "threshold must be a number in"),
    ({"threshold": "nan"}, "threshold must be a number in"),
    ({"threshold": ""}, "field threshold is empty"),
])
def test_upload_options_say_what_is_wrong(fields, message):
    with pytest.raises(errors.InvalidArgument, match=message):
        options(**fields)


def test_model_ids_are_not_capped_like_intervals():
    assert options(model_id="1000001").model_id == 1_000_001
    assert options(model_id=str(2**63 - 1)).model_id == 2**63 - 1
    for bad in ("0", "-7", str(2**63)):  # beyond int64, no service could name that model
        with pytest.raises(errors.InvalidArgument, match="model_id must be a positive integer"):
            options(model_id=bad)
    with pytest.raises(errors.InvalidArgument, match="interval must be a positive integer up to 1000000"):
        options(interval="1000001")


def test_upload_options_defaults_and_precedence():
    assert upload_options({"model_id": "7"}, "a.mp4", 1).interval == 1
    assert upload_options({"model_id": "7", "title": "", "description": ""}, "a.mp4", 1).title == "a.mp4"  # these may be empty
    by_time = upload_options({"model_id": "7", "interval": "10", "interval_ms": "500"}, "a.mp4", 1)
    assert (by_time.interval, by_time.interval_ms) == (None, 500)
    assert upload_options({"model_id": "7", "wait": "true", "title": " Mine "}, "a.mp4", 1).wait is True
    assert upload_options({"model_id": "7", "title": " Mine "}, "a.mp4", 1).title == "Mine"
    assert upload_options({"model_id": "7"}, "a.mp4", 1).dedupe is False
    assert upload_options({"model_id": "7", "dedupe": "true"}, "a.mp4", 1).dedupe is True


def test_an_upload_that_could_not_queue_its_job_leaves_nothing(world, light_dark_video, tmp_path):
    world.jobs.fail_with = errors.Unavailable("the database is unavailable")
    with pytest.raises(errors.Unavailable):
        world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))
    assert nothing_stored(world)


def interrupted_upload(world, video, tmp_path, monkeypatch) -> int:
    """An upload whose process died right after writing the record: the record and file stay,
    marked `job_pending`, and no job exists."""
    def die(doc):
        raise SystemExit("the process died after writing the record")

    with monkeypatch.context() as patch:
        patch.setattr(world.core, "_enqueue", die)
        with pytest.raises(SystemExit):
            world.core.upload(1, 10, options(), uploaded(video, tmp_path))
    [video_id] = world.repository.docs
    return video_id


def test_an_upload_interrupted_before_its_job_was_queued_is_queued_by_the_sweep(world, light_dark_video, tmp_path, monkeypatch):
    video_id = interrupted_upload(world, light_dark_video, tmp_path, monkeypatch)
    assert world.jobs.docs == {} and world.core.get(video_id, 1)["status"] == "queued"

    assert world.core.queue_missing_jobs() == 0  # too recent: its upload may still be queuing it
    world.core.requeue_after_s = 0
    world.core.sweep()
    job = world.jobs.get(job_id(video_id))
    assert (job.kind, job.payload) == (SPLIT_JOB, {"video_id": video_id, "project_id": 10, "user_id": 1})
    assert job.progress == {"done": 0, "total": 20}  # the same estimate an upload queues with
    assert "job_pending" not in world.repository.docs[video_id]
    assert world.core.queue_missing_jobs() == 0 and world.jobs.enqueued == [job_id(video_id)]


def test_a_video_being_deleted_is_not_queued_by_the_sweep(world, light_dark_video, tmp_path, monkeypatch):
    video_id = interrupted_upload(world, light_dark_video, tmp_path, monkeypatch)
    world.repository.mark_deleting(video_id)
    world.core.requeue_after_s = 0
    assert world.core.queue_missing_jobs() == 0 and world.jobs.docs == {}


def test_an_uploaded_video_is_not_queued_twice_by_the_sweep(world, light_dark_video, tmp_path):
    video_id = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))["video"]["id"]
    assert "job_pending" not in world.repository.docs[video_id]
    world.core.requeue_after_s = 0
    assert world.core.queue_missing_jobs() == 0 and world.jobs.enqueued == [job_id(video_id)]


def test_readers_see_the_job_state(world, light_dark_video, tmp_path):
    video_id = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))["video"]["id"]
    world.jobs.set(job_id(video_id), status=jobs.RUNNING, progress={"done": 8, "total": 20})
    assert world.core.get(video_id, 1)["status"] == "processing"
    assert world.core.list(1, 10)[0]["progress"] == {"done": 8, "total": 20}
    world.jobs.set(job_id(video_id), status=jobs.FAILED, error="the video could not be decoded")
    video = world.core.get(video_id, 1)
    assert (video["status"], video["error"], video["waiting"]) == ("failed", "the video could not be decoded", None)


def test_readers_see_why_and_since_when_a_job_waits_for_a_service(world, light_dark_video, tmp_path):
    video_id = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))["video"]["id"]
    assert world.core.get(video_id, 1)["waiting"] is None
    since, retry_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), datetime(2026, 1, 2, 3, 4, 13, tzinfo=timezone.utc)
    world.jobs.set(job_id(video_id), status=jobs.QUEUED, attempts=0,
                   waiting={"reason": "the model service is unavailable: connection refused", "since": since, "retry_at": retry_at, "waits": 3})
    video = world.core.list(1, 10)[0]
    assert (video["status"], video["error"]) == ("queued", None)
    assert video["waiting"] == {"reason": "the model service is unavailable: connection refused",
                                "since": "2026-01-02T03:04:05.000Z", "retry_at": "2026-01-02T03:04:13.000Z"}
    world.jobs.set(job_id(video_id), status=jobs.DONE)
    assert world.core.get(video_id, 1)["waiting"] is None


def test_get_with_images_lists_the_frames_in_order(world, light_dark_video, tmp_path):
    from video_fakes import FakeLabeller

    from video_service.pipeline import FramePipeline
    from video_service.split_job import split_request

    video_id = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))["video"]["id"]
    FramePipeline(FakeLabeller(), world.images, batch_size=8).run(split_request(world.repository.docs[video_id]), light_dark_video, lambda *a: None)
    answer = world.core.get_with_images(video_id, 1)
    images = answer["images"]
    assert [image["frame_index"] for image in images] == list(range(0, 200, 10))
    assert [image["type"] for image in images] == ["light"] * 10 + ["dark"] * 10
    first = images[0]
    assert (first["video"], first["project"], first["user"], first["captions"], first["boxes"], first["detections"]) == (video_id, 10, 1, None, None, None)
    assert 0.9 < first["score"] <= 1.0


def test_others_cannot_read_or_delete_a_video(world, light_dark_video, tmp_path):
    video_id = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))["video"]["id"]
    for call in (world.core.get, world.core.get_with_images, world.core.delete):
        with pytest.raises(errors.NotFound):
            call(video_id, 2)
    with pytest.raises(errors.NotFound):
        world.core.list(2, 10)


def test_delete_removes_frames_file_job_and_record(world, light_dark_video, tmp_path):
    video_id = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))["video"]["id"]
    world.images.create_images(10, 1, [_frame(video_id, 0), _frame(video_id, 10)])
    world.core.delete(video_id, 1)
    assert nothing_stored(world) and world.images.of_video(video_id) == []
    with pytest.raises(errors.NotFound):
        world.core.get(video_id, 1)


def test_delete_of_a_video_in_progress_waits_for_its_worker(world, light_dark_video, tmp_path):
    video_id = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))["video"]["id"]
    world.jobs.set(job_id(video_id), status=jobs.RUNNING)
    world.jobs.live_workers.add(job_id(video_id))
    world.core.delete(video_id, 1)
    assert world.jobs.get(job_id(video_id)).cancel_requested
    with pytest.raises(errors.NotFound):  # hidden at once
        world.core.get(video_id, 1)
    assert video_id in world.repository.docs  # but kept until the worker stops
    world.images.create_images(10, 1, [_frame(video_id, 0)])  # the worker's last batch

    world.jobs.set(job_id(video_id), status=jobs.CANCELLED)
    world.jobs.live_workers.clear()
    assert world.core.retry_pending_deletions() == 1
    assert nothing_stored(world) and world.images.of_video(video_id) == []


def test_a_delete_the_image_service_cannot_finish_is_finished_later(world, light_dark_video, tmp_path):
    video_id = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))["video"]["id"]
    world.images.fail_with = errors.Unavailable("the image service is unavailable")
    world.core.delete(video_id, 1)
    assert video_id in world.repository.docs
    world.images.fail_with = None
    assert world.core.retry_pending_deletions() == 1 and nothing_stored(world)


def test_delete_project_data_removes_every_video_of_the_project(world, light_dark_video, tmp_path):
    for _ in range(2):
        world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))
    other = world.core.upload(1, 11, options(model_id="8"), uploaded(light_dark_video, tmp_path))["video"]["id"]
    assert world.core.delete_project_data(10) == 2
    assert list(world.repository.docs) == [other]
    assert world.core.delete_project_data(10) == 0  # idempotent


def test_delete_project_data_asks_to_be_retried_while_a_worker_is_stopping(world, light_dark_video, tmp_path):
    video_id = world.core.upload(1, 10, options(), uploaded(light_dark_video, tmp_path))["video"]["id"]
    world.jobs.set(job_id(video_id), status=jobs.RUNNING)
    world.jobs.live_workers.add(job_id(video_id))
    with pytest.raises(errors.Unavailable):
        world.core.delete_project_data(10)
    world.jobs.live_workers.clear()
    assert world.core.delete_project_data(10) == 1


def _frame(video_id, index):
    from mlstudio.image.v1 import image_pb2

    return image_pb2.NewImage(content=b"jpeg", content_type="image/jpeg", tag="light", video_id=video_id, frame_index=index)

