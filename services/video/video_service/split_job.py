"""The worker's handler of `split_video` jobs: fetch the video, run the frame pipeline, record
what was decoded; on failure or cancellation, remove the frames stored so far.

A job that is claimed again (its worker died) resumes after the last frame its checkpoint says
was stored. Failures a person can act on end the job with a sentence saying what went wrong;
a peer that is down (`Unavailable`) makes the job wait and retry.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from pathlib import Path

from mlstudio.common import errors, jobs

from .frames import Truncated, Undecodable
from .pipeline import FramePipeline, FramesRefused, Resume, SplitRequest

log = logging.getLogger(__name__)


class SplitVideoHandler:
    def __init__(self, repository, store, pipeline: FramePipeline, images, tmp_dir: Path):
        self.repository = repository
        self.store = store
        self.pipeline = pipeline
        self.images = images
        self.tmp_dir = Path(tmp_dir)

    def run(self, job: jobs.Job, context: jobs.JobContext) -> dict:
        video = self.repository.get_any(job.payload["video_id"])
        if video is None or video.get("deleting"):
            raise jobs.JobCancelled(f"video {job.payload['video_id']} is being deleted")
        request = split_request(video)
        resume = Resume(after_frame=int(job.checkpoint.get("frame_index", -1)), done=int(job.progress.get("done", 0)),
                        skipped=int(job.progress.get("skipped", 0))) if job.checkpoint else Resume()
        with self._downloaded(video) as path:
            context.check()
            summary = self._split(request, path, context, resume)
        self.repository.update(video["_id"], {"frame_count": summary.frames_decoded, **({"fps": round(summary.fps, 3)} if summary.fps > 0 else {})})
        log.info("video split", extra={"video": video["_id"], "frames_decoded": summary.frames_decoded, "images": summary.images,
                                       "skipped": summary.skipped})
        result = {"frames_decoded": summary.frames_decoded, "images": summary.images}
        return {**result, "duplicates_skipped": summary.skipped} if request.dedupe else result

    def _split(self, request: SplitRequest, path: Path, context: jobs.JobContext, resume: Resume):
        def report(done: int, total: int, last_frame: int, skipped: int) -> None:
            if request.dedupe:
                context.report(done, total, {"frame_index": last_frame}, {"skipped": skipped})
            else:
                context.report(done, total, {"frame_index": last_frame})

        try:
            return self.pipeline.run(request, path, report, resume)
        except Truncated as exc:
            raise jobs.JobFailed(str(exc)) from None
        except Undecodable as exc:
            raise jobs.JobFailed(f"the video could not be decoded: {exc}") from None
        except FramesRefused as exc:
            raise jobs.JobFailed(str(exc)) from None

    @contextmanager
    def _downloaded(self, video: dict):
        """The video as a file on this machine: the stored object itself on the local backend
        (no copy), a download into the spool directory elsewhere (S3)."""
        with ExitStack() as held:
            try:
                path = held.enter_context(self.store.local_path(video["key"], self.tmp_dir))
            except errors.NotFound:
                raise jobs.JobFailed("the video's file is missing from storage") from None
            except errors.DomainError:
                raise
            except Exception as exc:
                log.warning("object storage failed: %s", exc)
                raise errors.Unavailable("object storage is unavailable") from exc
            yield path

    def cleanup(self, job: jobs.Job) -> None:
        """Removes the frames of a job that failed or was cancelled (idempotent)."""
        deleted = self.images.delete_images_by_video(job.payload["video_id"], job.payload["project_id"])
        if deleted:
            log.info("removed %s frames of video %s", deleted, job.payload["video_id"])


def split_request(video: dict) -> SplitRequest:
    return SplitRequest(
        video_id=video["_id"],
        project_id=video["project"],
        user_id=video["user"],
        model_id=video["model"],
        project_type=video["type"],
        title=video["title"],
        interval=video.get("interval"),
        interval_ms=video.get("interval_ms"),
        dedupe=bool(video.get("dedupe")),
        threshold=video.get("threshold") or 0.0,
        frame_count_estimate=int(video.get("frame_count") or 0),
        duration_ms_estimate=int(video["frame_count"] * 1000 / video["fps"]) if video.get("fps") and video.get("frame_count") else 0,
    )
