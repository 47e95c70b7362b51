"""The video worker process (`python -m video_service.worker`): claims `split_video` jobs from
the video service's database and splits each video into labelled frames.

Each worker splits up to VIDEO_JOB_SLOTS videos at once (one per core by default), each in a
thread of its own under its own lease. Run as many workers as the machine (or cluster) allows:
jobs are claimed under a lease, so two workers never work on one video at once, and a worker
that dies leaves each of its jobs to the others once that job's lease expires. SIGTERM (or
Ctrl-C) stops the worker after the batches in progress and hands its jobs back to the queue at
once.
"""
import logging
import os
import socket
import uuid

from mlstudio.common import clients, jobs, logs, metrics, mongo, settings as settings_mod, storage

from .core import SPLIT_JOB
from .pipeline import FramePipeline
from .repository import VideoRepository
from .settings import VideoSettings
from .split_job import SplitVideoHandler

log = logging.getLogger(__name__)


def worker_name(settings: VideoSettings) -> str:
    return settings.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def build_worker(settings: VideoSettings) -> jobs.Worker:
    db = mongo.connect(settings.mongo_uri, settings.database_name)
    job_queue = settings.job_queue(db.jobs)
    job_queue.ensure_indexes()
    # Every call of the worker carries a batch of frames (or removes a video's frames).
    images = clients.ImageClient(settings.image_grpc_addr, settings.worker_call_deadline_s)
    models = clients.ModelClient(settings.model_grpc_addr, settings.worker_call_deadline_s)
    pipeline = FramePipeline(models, images, batch_size=settings.batch_size, batch_bytes=settings.batch_bytes,
                             jpeg_quality=settings.jpeg_quality)
    handler = SplitVideoHandler(VideoRepository(db), storage.open_store(settings.object_storage_url), pipeline, images, settings.tmp_dir)
    # The handler and its pipeline keep no per-job state: the slots' jobs share them (and the
    # gRPC channels, which carry concurrent calls).
    return jobs.Worker(job_queue, {SPLIT_JOB: handler}, worker_name(settings), poll_s=settings.worker_poll_s,
                       slots=settings.job_slot_count)


def main() -> None:
    settings = settings_mod.load(VideoSettings)
    logs.configure("video-worker", settings.log_level)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    settings_mod.require(settings, "model_grpc_addr", "image_grpc_addr", why="the video worker needs that service")
    build_worker(settings).run_until_signalled("after the current batch; the job goes back to the queue")


if __name__ == "__main__":
    main()
