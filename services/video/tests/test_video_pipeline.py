"""The frame pipeline and the worker's job handler, with fakes of the model and image services:
tags, scores, detections, batching, progress, resuming after a crash, and failures."""
import pytest
from video_fakes import FakeImages, FakeLabeller, FakeRepository, RecordingContext

from mlstudio.common import errors, jobs
from mlstudio.common.storage import LocalObjectStore, ObjectStore
from video_service.pipeline import FramePipeline, Resume, SplitRequest
from video_service.split_job import SplitVideoHandler


def request(**overrides):
    fields = dict(video_id=5, project_id=10, user_id=1, model_id=7, project_type="Classification", title="clip",
                  interval=10, interval_ms=None, frame_count_estimate=200)
    return SplitRequest(**{**fields, **overrides})


def run_pipeline(path, images=None, labeller=None, resume=Resume(), batch_size=4, **overrides):
    images = images or FakeImages()
    labeller = labeller or FakeLabeller()
    reports = []
    summary = FramePipeline(labeller, images, batch_size=batch_size).run(
        request(**overrides), path, lambda done, total, last, skipped: reports.append((done, total, last)), resume)
    return summary, images, labeller, reports


def test_light_dark_video_gives_ten_light_and_ten_dark_frames(light_dark_video):
    summary, images, labeller, _ = run_pipeline(light_dark_video)
    stored = images.of_video(5)
    assert [image.frame_index for image in stored] == list(range(0, 200, 10))
    assert [image.tag for image in stored] == ["light"] * 10 + ["dark"] * 10
    assert all(image.score > 0.9 for image in stored)
    assert stored[3].timestamp_ms == 1200 and stored[3].title == "clip frame 30"
    assert (summary.frames_decoded, summary.images) == (200, 20)


def test_frames_go_to_the_model_and_the_store_in_batches(light_dark_video):
    _, images, labeller, reports = run_pipeline(light_dark_video, batch_size=8)
    assert labeller.calls == [("classify", 8), ("classify", 8), ("classify", 4)]
    assert images.create_calls == 3
    assert reports == [(8, 20, 70), (16, 20, 150), (20, 20, 190), (20, 20, 190)]


def test_model_labels_go_as_the_model_said_and_the_image_service_makes_the_tag(light_dark_video):
    _, images, _, _ = run_pipeline(light_dark_video)
    first = images.sent[0]  # the fake answers "LIGHT" for the first of a batch
    assert (first.tag, first.score > 0.9) == ("LIGHT", True)
    assert images.of_video(5)[0].tag == "light"  # filed by the image service's rule


def test_detection_frames_carry_every_box_and_leave_the_tag_to_the_image_service(light_dark_video):
    _, images, labeller, _ = run_pipeline(light_dark_video, project_type="Detection", model_id=8)
    assert labeller.calls[0][0] == "detect"
    sent_light, sent_dark = images.sent[0], images.sent[-1]
    assert (sent_light.tag, sent_light.HasField("score")) == ("", False)
    assert [(d.label, round(d.x2, 1)) for d in sent_light.detections] == [("Bottle", 30.4), ("cap", 5.0)]
    assert (sent_dark.tag, sent_dark.HasField("score"), list(sent_dark.detections)) == ("", False, [])
    stored = images.of_video(5)
    light, dark = stored[0], stored[-1]
    assert light.tag == "detected" and light.score == pytest.approx(0.9)
    assert dark.tag == "detected" and not dark.HasField("score") and list(dark.detections) == []


def test_resuming_after_a_crash_stores_only_the_rest_and_no_duplicate(light_dark_video):
    images = FakeImages()
    run_pipeline(light_dark_video, images=images)
    for frame_index in range(130, 200, 10):  # the crashed attempt stored up to frame 120
        del images.images[(5, frame_index)]
    labeller = FakeLabeller()
    summary, _, _, reports = run_pipeline(light_dark_video, images=images, labeller=labeller, resume=Resume(after_frame=120, done=13))
    assert sum(count for _, count in labeller.calls) == 7
    assert [image.frame_index for image in images.of_video(5)] == list(range(0, 200, 10))
    assert reports[-1] == (20, 20, 190) and summary.images == 20


def test_a_batch_stored_twice_creates_nothing_twice(light_dark_video):
    images = FakeImages()
    run_pipeline(light_dark_video, images=images)
    first_ids = sorted(image.id for image in images.of_video(5))
    run_pipeline(light_dark_video, images=images)  # a crash right before the checkpoint: all again
    assert sorted(image.id for image in images.of_video(5)) == first_ids


def test_a_model_that_answers_too_few_results_stops_the_pipeline(light_dark_video):
    from video_service.pipeline import FramesRefused

    labeller = FakeLabeller()
    labeller.short_answer = True
    with pytest.raises(FramesRefused, match="model 7 answered 3 results for 4 frames"):
        run_pipeline(light_dark_video, labeller=labeller)


def test_a_report_that_says_stop_ends_decoding(light_dark_video):
    images = FakeImages()
    calls = []

    def report(done, total, last, skipped):
        calls.append(done)
        raise jobs.JobCancelled("video deleted")

    with pytest.raises(jobs.JobCancelled):
        FramePipeline(FakeLabeller(), images, batch_size=4).run(request(interval=1), light_dark_video, report)
    assert calls == [4] and len(images.images) == 4


# ---- the job handler ---------------------------------------------------------------------------

@pytest.fixture
def handler_world(tmp_path, light_dark_video):
    repository, images, labeller = FakeRepository(), FakeImages(), FakeLabeller()
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("videos/10/5.mp4", light_dark_video.read_bytes())
    repository.insert({"_id": 5, "project": 10, "user": 1, "model": 7, "type": "Classification", "title": "clip", "interval": 10,
                       "interval_ms": None, "key": "videos/10/5.mp4", "frame_count": 190, "fps": 25.0})
    handler = SplitVideoHandler(repository, store, FramePipeline(labeller, images, batch_size=8), images, tmp_path / "spool")
    return handler, repository, images, labeller, store, tmp_path


def job(**overrides):
    doc = {"_id": "video-5", "kind": "split_video", "payload": {"video_id": 5, "project_id": 10, "user_id": 1}, "status": "running",
           "attempts": 1, "max_attempts": 3, "progress": {"done": 0, "total": 19}, "checkpoint": {}, "error": ""}
    return jobs.Job.from_doc({**doc, **overrides})


def test_the_handler_splits_the_stored_video_and_records_the_decoded_count(handler_world):
    handler, repository, images, _, _, tmp_path = handler_world
    context = RecordingContext()
    assert handler.run(job(), context) == {"frames_decoded": 200, "images": 20}
    assert len(images.of_video(5)) == 20
    assert repository.docs[5]["frame_count"] == 200  # the container's 190 was only an estimate
    # progress totals are the estimate (190 / 10) until the end says the truth
    assert context.reports[0] == (8, 19, {"frame_index": 70}) and context.reports[-1] == (20, 20, {"frame_index": 190})
    assert not (tmp_path / "spool").exists()  # nothing downloaded: the local object is read where it lies


def test_the_handler_reads_a_locally_stored_video_where_it_lies(handler_world, monkeypatch):
    """The local backend's object is the file the pipeline decodes: no copy in the spool."""
    handler, _, _, _, store, tmp_path = handler_world
    read = []
    real_run = handler.pipeline.run
    monkeypatch.setattr(handler.pipeline, "run", lambda request, path, *rest: read.append(path) or real_run(request, path, *rest))
    handler.run(job(), RecordingContext())
    assert read == [tmp_path / "objects" / "videos" / "10" / "5.mp4"]
    assert not (tmp_path / "spool").exists()


def test_a_remote_store_s_video_is_downloaded_and_the_copy_removed(handler_world, monkeypatch):
    """Backends that do not keep objects as local files (S3) still download a copy."""
    handler, _, images, _, store, tmp_path = handler_world
    monkeypatch.setattr(type(store), "local_path", ObjectStore.local_path)
    read = []
    real_run = handler.pipeline.run
    monkeypatch.setattr(handler.pipeline, "run", lambda request, path, *rest: read.append(path) or real_run(request, path, *rest))
    assert handler.run(job(), RecordingContext())["images"] == 20
    assert read[0].parent == tmp_path / "spool"
    assert list((tmp_path / "spool").iterdir()) == []


def test_dedupe_stores_one_frame_per_static_shot_and_counts_the_rest(light_dark_video):
    summary, images, labeller, reports = run_pipeline(light_dark_video, interval=1, dedupe=True)
    assert [image.frame_index for image in images.of_video(5)] == [0, 100]
    assert [image.tag for image in images.of_video(5)] == ["light", "dark"]
    assert (summary.images, summary.skipped, summary.frames_decoded) == (2, 198, 200)
    assert reports[-1] == (2, 2, 100)


def test_the_handler_reports_skipped_duplicates_in_progress_and_result(handler_world):
    handler, repository, images, _, _, _ = handler_world
    repository.docs[5].update(interval=1, dedupe=True)
    recorded = []

    class Context(RecordingContext):
        def report(self, done, total, checkpoint=None, details=None):
            recorded.append(details)
            super().report(done, total, checkpoint, details)

    assert handler.run(job(), Context()) == {"frames_decoded": 200, "images": 2, "duplicates_skipped": 198}
    assert recorded[-1] == {"skipped": 198} and len(images.of_video(5)) == 2


def test_the_handler_resumes_from_the_checkpoint(handler_world):
    handler, _, images, labeller, _, _ = handler_world
    handler.run(job(checkpoint={"frame_index": 150}, progress={"done": 16, "total": 20}), RecordingContext())
    assert sum(count for _, count in labeller.calls) == 4


def test_an_undecodable_stored_file_fails_the_job_with_a_clear_error(handler_world):
    handler, _, _, _, store, _ = handler_world
    store.put_bytes("videos/10/5.mp4", b"garbage" * 100)
    with pytest.raises(jobs.JobFailed, match="could not be decoded"):
        handler.run(job(), RecordingContext())


def test_a_stored_file_that_ends_early_fails_the_job_saying_where(handler_world, tmp_path):
    handler, _, images, _, store, _ = handler_world
    from conftest import shared_data_dir

    with open(shared_data_dir() / "car-detection.mp4", "rb") as handle:
        store.put_bytes("videos/10/5.mp4", handle.read(100_000))  # 12 of its 377 frames
    with pytest.raises(jobs.JobFailed, match="^the video ends at frame 12 of the 377 its container records: the file is truncated or damaged$"):
        handler.run(job(), RecordingContext())


def test_a_deleted_model_fails_the_job_with_a_clear_error(handler_world):
    handler, _, _, labeller, _, _ = handler_world
    labeller.fail_with = errors.NotFound("model 7 not found")
    with pytest.raises(jobs.JobFailed, match="model 7 cannot label the frames any more: model 7 not found"):
        handler.run(job(), RecordingContext())


def test_frames_the_image_service_refuses_fail_the_job_with_its_reason(handler_world):
    handler, _, images, _, _, _ = handler_world
    images.fail_with = errors.InvalidArgument("invalid tag 'all'")
    with pytest.raises(jobs.JobFailed, match="the frames could not be stored: invalid tag 'all'"):
        handler.run(job(), RecordingContext())


def test_an_unavailable_peer_is_left_to_retry(handler_world):
    handler, _, _, labeller, _, _ = handler_world
    labeller.fail_with = errors.Unavailable("the model service is unavailable")
    with pytest.raises(errors.Unavailable):
        handler.run(job(), RecordingContext())


def test_a_missing_file_fails_the_job(handler_world):
    handler, _, _, _, store, _ = handler_world
    store.delete("videos/10/5.mp4")
    with pytest.raises(jobs.JobFailed, match="missing"):
        handler.run(job(), RecordingContext())


def test_a_video_being_deleted_is_not_split(handler_world):
    handler, repository, images, _, _, _ = handler_world
    repository.mark_deleting(5)
    with pytest.raises(jobs.JobCancelled):
        handler.run(job(), RecordingContext())
    assert images.images == {}


def test_cleanup_removes_the_partial_frames(handler_world):
    handler, _, images, _, _, _ = handler_world
    with pytest.raises(jobs.JobCancelled):
        handler.run(job(), RecordingContext(cancel_after=1))
    assert len(images.of_video(5)) == 16  # the second batch was stored when the cancel was seen
    handler.cleanup(job())
    assert images.of_video(5) == []


def test_labelling_the_next_batch_overlaps_storing_the_previous_one_and_order_is_kept(light_dark_video):
    import threading

    second_batch_labelled = threading.Event()
    overlapped = []

    class SlowImages(FakeImages):
        def create_images(self, project_id, user_id, images):
            if self.create_calls == 0:  # the first batch waits until the next one is at the model
                overlapped.append(second_batch_labelled.wait(timeout=30))
            return super().create_images(project_id, user_id, images)

    class RecordingLabeller(FakeLabeller):
        def classify(self, model_id, user_id, images):
            if len(self.calls) == 1:
                second_batch_labelled.set()
            return super().classify(model_id, user_id, images)

    _, images, labeller, reports = run_pipeline(light_dark_video, images=SlowImages(), labeller=RecordingLabeller(), batch_size=8)
    assert overlapped == [True]
    assert [image.frame_index for image in images.sent] == list(range(0, 200, 10))
    assert reports == [(8, 20, 70), (16, 20, 150), (20, 20, 190), (20, 20, 190)]


def test_a_store_that_fails_stops_the_pipeline_and_nothing_after_it_is_stored(light_dark_video):
    images = FakeImages()
    images.fail_with = errors.InvalidArgument("project 10 is gone")
    from video_service.pipeline import FramesRefused

    with pytest.raises(FramesRefused, match="project 10 is gone"):
        run_pipeline(light_dark_video, images=images, interval=1)
    assert images.create_calls == 1 and images.images == {}
