"""Builds the model service's core from its settings: one place for the service process
(`python -m model_service`) and the trainer (`python -m model_service.trainer`), so that a trained
model is registered by the very same objects as an uploaded one."""
from __future__ import annotations

from mlstudio.common import clients, jobs, media_urls, settings as settings_mod, storage

from .conversion import ExportConfinement, SubprocessConverter
from .core import Limits, ModelCore, served_versions
from .evaluation.service import Evaluations
from .repository import ModelRepository
from .serving import Serving
from .settings import ModelSettings
from .tfserving_client import TFServingClient
from .tfserving_repository import TFServingRepository
from .trainings import TrainingLimits, Trainings


def training_queue(settings: ModelSettings, db) -> jobs.JobQueue:
    """The training jobs, in the service's database (the shared job queue with leases)."""
    queue = jobs.JobQueue(db.training_jobs, lease_s=settings.trainer_job_lease_s, max_attempts=settings.trainer_job_max_attempts,
                          retry_delay_s=settings.trainer_job_retry_delay_s)
    queue.ensure_indexes()
    return queue


def evaluation_queue(db) -> jobs.JobQueue:
    """The evaluation jobs, in the service's database (run by the service's own worker thread)."""
    queue = jobs.JobQueue(db.evaluation_jobs)
    queue.ensure_indexes()
    return queue


def build_evaluations(settings: ModelSettings, db, store, signer) -> Evaluations | None:
    """Evaluations, where the image service (the labelled images) is deployed."""
    if not settings.image_grpc_addr:
        return None
    return Evaluations(evaluation_queue(db), clients.ImageClient(settings.image_grpc_addr, settings.grpc_deadline_s), store, signer)


def build_trainings(settings: ModelSettings, db, store) -> Trainings | None:
    """Training requests, where the image service (the training data) is deployed."""
    if not settings.image_grpc_addr:
        return None
    limits = TrainingLimits(default_time_limit_s=min(settings.training_time_limit_s, settings.training_max_time_limit_s),
                            max_time_limit_s=settings.training_max_time_limit_s,
                            min_images_per_tag=settings.training_min_images_per_tag,
                            max_script_bytes=settings.training_max_script_bytes)
    return Trainings(training_queue(settings, db), clients.ImageClient(settings.image_grpc_addr, settings.grpc_deadline_s), store, limits)


def build_core(settings: ModelSettings, db) -> ModelCore:
    settings_mod.require(settings, "project_grpc_addr", why="models belong to projects")
    repository = ModelRepository(db)
    repository.ensure_indexes()
    tfserving_repository = TFServingRepository(settings.model_base, settings.config_file, settings.tfserving_model_base_in_server or None)
    tfserving_repository.prepare()
    client = TFServingClient(settings.tfserving_addr, predict_deadline_s=settings.tfserving_predict_deadline_s,
                             control_deadline_s=settings.tfserving_control_deadline_s, reload_deadline_s=settings.model_load_timeout_s,
                             connect_wait_s=settings.tfserving_connect_wait_s)
    serving = Serving(tfserving_repository, client, lambda: served_versions(repository), load_timeout_s=settings.model_load_timeout_s,
                      batch_window_s=settings.predict_batch_window_ms / 1000, max_batch=settings.predict_max_batch)
    # A zipped SavedModel may unpack to no more than an upload may weigh.
    confinement = ExportConfinement(require_isolation=settings.export_require_isolation, user=settings.export_user or None,
                                    memory_bytes=settings.export_memory_mb << 20)
    converter = SubprocessConverter(timeout_s=settings.convert_timeout_s, dynamic_size=settings.dynamic_input_size,
                                    max_unzipped_bytes=settings.model_upload_max_bytes, concurrency=settings.convert_concurrency,
                                    confinement=confinement)
    limits = Limits(max_model_bytes=settings.model_upload_max_bytes, max_batch=settings.predict_max_batch,
                    registration_claim_s=settings.convert_timeout_s + settings.model_load_timeout_s + 600)
    store = storage.open_store(settings.object_storage_url)
    signer = media_urls.MediaSigner(settings.media_signing_key, settings.public_base_url, settings.media_url_ttl_s)
    return ModelCore(
        repository,
        clients.ProjectClient(settings.project_grpc_addr, settings.grpc_deadline_s),
        store,
        serving,
        converter,
        signer,
        limits,
        trainings=build_trainings(settings, db, store),
        evaluations=build_evaluations(settings, db, store, signer),
    )
