"""Composition root of the video service's API process: settings, database, object storage,
the job queue, the peers it asks (projects, models, images), HTTP + gRPC, and the sweep that
finishes what an interruption left unfinished (deletions, uploads whose job was never queued). The
frames are made by `video_service.worker`."""

from mlstudio.common import clients, logs, media_urls, metrics, mongo, runner, settings as settings_mod, storage

from .app import build_grpc, create_app
from .core import VideoCore
from .repository import VideoRepository
from .settings import VideoSettings


def main() -> None:
    settings = settings_mod.load(VideoSettings)
    logs.configure("video", settings.log_level)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    settings_mod.require(settings, "project_grpc_addr", "model_grpc_addr", "image_grpc_addr", why="the video service needs that service")
    db = mongo.connect(settings.mongo_uri, settings.database_name)
    repository = VideoRepository(db)
    repository.ensure_indexes()
    job_queue = settings.job_queue(db.jobs)
    job_queue.ensure_indexes()
    metrics.watch_job_queue("videos", db.jobs)
    store = storage.open_store(settings.object_storage_url)
    signer = media_urls.MediaSigner(settings.media_signing_key, settings.public_base_url, settings.media_url_ttl_s)
    core = VideoCore(
        repository, job_queue, store,
        clients.ProjectClient(settings.project_grpc_addr, settings.grpc_deadline_s),
        clients.ModelClient(settings.model_grpc_addr, settings.grpc_deadline_s),
        clients.ImageClient(settings.image_grpc_addr, settings.grpc_deadline_s),
        signer,
        wait_timeout_s=settings.wait_timeout_s,
        cancel_wait_s=settings.cancel_wait_s,
        max_frame_pixels=settings.max_frame_pixels,
    )
    server, port, _health = build_grpc(settings, core)
    sweep = runner.periodic("video-sweep", settings.delete_retry_s, core.sweep)
    app = create_app(settings, core, readiness={"mongodb": lambda: mongo.ping(db), "storage": store.ping})
    runner.serve(app, host=settings.http_host, http_port=settings.http_port, grpc_server=server, grpc_port=port,
                 max_body_bytes=settings.max_upload_bytes, background=[sweep])


if __name__ == "__main__":
    main()
