"""Composition root of the image service: settings, database, object store, the services it
asks (projects always; models and videos when deployed), HTTP + gRPC, the sweep that finishes
deletes left half-way, and dataset exports and imports (their job worker threads and expiry
sweeps).

Export and import jobs run in worker threads of this process rather than in a worker process of their own:
they read and write only this service's data (its database, its objects), stream without
holding images in memory, and are lease-based jobs, so any replica may take one over. A separate
deployment would repeat this service's whole configuration for no gain in isolation.
`EXPORT_WORKERS=0` leaves them to other replicas.
"""
import os
import socket
import threading

from mlstudio.common import clients, jobs, logs, metrics, mongo, runner
from mlstudio.common import settings as settings_mod
from mlstudio.common.media_urls import MediaSigner
from mlstudio.common.storage import open_store

from .app import build_grpc, create_app
from .archive_checks import ArchiveLimits
from .core import ImageCore
from .detections import FILINGS
from .exports import KIND as EXPORT, ExportCore, ExportJob
from .imports import KIND as IMPORT, ImportCore, ImportJob
from .relabels import KIND as RELABEL, RelabelCore, RelabelJob
from .repository import ExportRepository, ImageRepository, ImportRepository, RelabelRepository
from .settings import ImageSettings
from .uploads import UploadLimits


def optional_client(address: str, client_class, deadline_s: float):
    return client_class(address, deadline_s) if address else None


def build_core(settings: ImageSettings, repository, store) -> ImageCore:
    settings_mod.require(settings, "project_grpc_addr", why="images belong to projects")
    if settings.detection_filing not in FILINGS:
        raise settings_mod.ConfigError(
            f"setting DETECTION_FILING={settings.detection_filing!r} is unknown: use {' or '.join(FILINGS)}")
    limits = UploadLimits(settings.max_image_bytes, settings.max_images_per_request, settings.max_image_pixels)
    return ImageCore(
        repository,
        store,
        clients.ProjectClient(settings.project_grpc_addr, settings.grpc_deadline_s),
        MediaSigner(settings.media_signing_key, settings.public_base_url, settings.media_url_ttl_s),
        limits,
        # Predictions of a batch of images take longer than a look-up.
        models=optional_client(settings.model_grpc_addr, clients.ModelClient, max(settings.grpc_deadline_s, 60.0)),
        videos=optional_client(settings.video_grpc_addr, clients.VideoClient, settings.grpc_deadline_s),
        predict_batch_bytes=settings.predict_batch_bytes,
        detection_filing=settings.detection_filing,
    )


def build_datasets(settings: ImageSettings, db, core: ImageCore, repository: ImageRepository, store):
    """The export, import and re-labelling cores, and the worker threads that run their jobs from
    one queue."""
    export_repository, import_repository, relabel_repository = ExportRepository(db), ImportRepository(db), RelabelRepository(db)
    for records in (export_repository, import_repository, relabel_repository):
        records.ensure_indexes()
    queue = jobs.JobQueue(db.dataset_jobs, lease_s=settings.job_lease_s)
    queue.ensure_indexes()
    limits = ArchiveLimits(settings.max_import_entries, settings.max_import_expanded_bytes)
    exports = ExportCore(core, export_repository, queue, store, core.signer, ttl_s=settings.export_ttl_s)
    imports = ImportCore(core, import_repository, queue, store, limits, max_annotation_bytes=settings.max_annotation_bytes,
                         ttl_s=settings.export_ttl_s)
    relabels = RelabelCore(core, relabel_repository, queue, ttl_s=settings.export_ttl_s)
    core.on_project_delete += [exports.cancel_project, imports.cancel_project, relabels.cancel_project]
    handlers = {
        EXPORT: ExportJob(repository, export_repository, store, ttl_s=settings.export_ttl_s),
        IMPORT: ImportJob(core, import_repository, store, limits, max_annotation_bytes=settings.max_annotation_bytes),
        RELABEL: RelabelJob(core, repository, relabel_repository),
    }
    workers = [
        threading.Thread(target=jobs.Worker(queue, handlers, owner=f"image-{socket.gethostname()}-{os.getpid()}-{n}").run_forever,
                         daemon=True, name=f"dataset-worker-{n}")
        for n in range(settings.export_workers)
    ]
    return exports, imports, relabels, workers


def main() -> None:
    settings = settings_mod.load(ImageSettings)
    logs.configure("image", settings.log_level)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    db = mongo.connect(settings.mongo_uri, settings.database_name)
    repository = ImageRepository(db)
    repository.ensure_indexes()
    store = open_store(settings.object_storage_url)
    core = build_core(settings, repository, store)
    exports, imports, relabels, dataset_workers = build_datasets(settings, db, core, repository, store)
    server, port, _health = build_grpc(settings, core)
    sweep = runner.periodic("delete-sweep", settings.delete_retry_s, core.finish_pending_deletes)
    expiry = runner.periodic("dataset-expiry", settings.export_sweep_s, lambda: (exports.sweep_expired(), imports.sweep_expired(),
                                                                                   relabels.sweep_expired()))
    app = create_app(settings, core, readiness={"mongodb": lambda: mongo.ping(db), "storage": store.ping},
                     exports=exports, imports=imports, relabels=relabels)
    runner.serve(app, host=settings.http_host, http_port=settings.http_port, grpc_server=server, grpc_port=port,
                 max_body_bytes=settings.max_upload_bytes, background=[sweep, expiry, *dataset_workers])


if __name__ == "__main__":
    main()
