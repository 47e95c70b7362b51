"""The trainer worker (`python -m model_service.trainer`): claims training jobs from the model
service's database and trains, one at a time, each in a confined child process
(`training/sandbox.py`), then registers the model through the model service's own core.

Run as many as the machine (or cluster) allows: jobs are claimed under a lease (the shared
`mlstudio.common.jobs` queue, as the video worker's), so two trainers never train one model, and
a trainer that dies leaves its job to the others once the lease expires; the job starts again
from the start, or from its trained model when only the registration was left. SIGTERM (or
Ctrl-C) stops the training in progress and hands its job back to the queue at once.

The trainer holds credentials (database, storage) that training scripts must never see: they run
with an environment built from scratch, and the trainer makes itself non-dumpable, so that a
script running under the same user (where no other user is available) cannot read the trainer's
environment or memory through /proc.
"""
import logging
import os
import socket
import uuid

from mlstudio.common import clients, jobs, logs, metrics, mongo, runner, settings as settings_mod

from .composition import build_core, training_queue
from .settings import ModelSettings
from .training import confine
from .training import features
from .training.job import TRAIN_JOB, TrainerConfig, TrainModelHandler
from .training.sandbox import Confinement, Limits

log = logging.getLogger(__name__)

WORK_SWEEP_S = 300.0  # how often the work directories of jobs no trainer runs are removed


def trainer_name(settings: ModelSettings) -> str:
    return settings.trainer_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def trainer_config(settings: ModelSettings) -> TrainerConfig:
    limits = Limits(
        memory_bytes=settings.training_memory_mb << 20,
        processes=settings.training_max_processes,
        file_bytes=settings.training_max_file_mb << 20,
        disk_bytes=settings.training_disk_quota_mb << 20,
        log_bytes=settings.training_log_bytes,
        max_model_bytes=settings.model_upload_max_bytes,
    )
    confinement = Confinement(user=settings.sandbox_user or None, isolate=settings.sandbox_namespaces,
                              require_isolation=settings.sandbox_require_isolation)
    return TrainerConfig(
        work_root=(settings.data_dir / "training").resolve(),
        limits=limits,
        confinement=confinement,
        max_time_limit_s=settings.training_max_time_limit_s,
        cpu_limit_s=settings.training_cpu_limit_s,
        min_images_per_tag=settings.training_min_images_per_tag,
        max_dataset_bytes=settings.training_max_dataset_mb << 20,
        backbone=features.locate(),
        feature_cache=(settings.data_dir / "feature-cache").resolve(),
    )


def build_worker(settings: ModelSettings) -> jobs.Worker:
    db = mongo.connect(settings.mongo_uri, settings.database_name)
    core = build_core(settings, db)
    images = clients.ImageClient(settings.image_grpc_addr, settings.grpc_deadline_s)
    handler = TrainModelHandler(core, images, core.store, trainer_config(settings))
    return jobs.Worker(training_queue(settings, db), {TRAIN_JOB: handler}, trainer_name(settings), poll_s=settings.trainer_poll_s)


def start_work_sweeps(worker: jobs.Worker) -> None:
    """Removes what killed trainers left in the work directory now, then every WORK_SWEEP_S."""
    handler = worker.handlers[TRAIN_JOB]

    def sweep() -> None:
        handler.sweep_work_root(worker.queue.is_active)

    try:
        sweep()
    except Exception:  # noqa: BLE001 - the database may be slow to come up; the periodic sweep comes anyway
        log.exception("the first sweep of the work directories failed")
    runner.periodic("training-work-sweep", WORK_SWEEP_S, sweep).start()


def main() -> None:
    settings = settings_mod.load(ModelSettings)
    logs.configure("model-trainer", settings.log_level)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    settings_mod.require(settings, "image_grpc_addr", why="the trainer reads training images from it")
    confine.prctl(confine.PR_SET_DUMPABLE, 0)
    if not settings.sandbox_require_isolation:
        log.warning("SANDBOX_REQUIRE_ISOLATION=false: where namespaces are refused, uploaded training scripts run "
                    "with this trainer's network and files")
    worker = build_worker(settings)
    start_work_sweeps(worker)
    worker.run_until_signalled("the training in progress goes back to the queue")


if __name__ == "__main__":
    main()
