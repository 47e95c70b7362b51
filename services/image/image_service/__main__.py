"""Composition root of the image service: settings, database, object store, the services it
asks (projects always; models and videos when deployed), HTTP + gRPC, and the sweep that
finishes deletes left half-way."""

from mlstudio.common import clients, logs, metrics, mongo, runner
from mlstudio.common import settings as settings_mod
from mlstudio.common.media_urls import MediaSigner
from mlstudio.common.storage import open_store

from .app import build_grpc, create_app
from .core import ImageCore
from .repository import ImageRepository
from .settings import ImageSettings
from .uploads import UploadLimits


def optional_client(address: str, client_class, deadline_s: float):
    return client_class(address, deadline_s) if address else None


def build_core(settings: ImageSettings, repository, store) -> ImageCore:
    settings_mod.require(settings, "project_grpc_addr", why="images belong to projects")
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
    )


def main() -> None:
    settings = settings_mod.load(ImageSettings)
    logs.configure("image", settings.log_level)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    db = mongo.connect(settings.mongo_uri, settings.database_name)
    repository = ImageRepository(db)
    repository.ensure_indexes()
    store = open_store(settings.object_storage_url)
    core = build_core(settings, repository, store)
    server, port, _health = build_grpc(settings, core)
    sweep = runner.periodic("delete-sweep", settings.delete_retry_s, core.finish_pending_deletes)
    app = create_app(settings, core, readiness={"mongodb": lambda: mongo.ping(db), "storage": store.ping})
    runner.serve(app, host=settings.http_host, http_port=settings.http_port, grpc_server=server, grpc_port=port,
                 max_body_bytes=settings.max_upload_bytes, background=[sweep])


if __name__ == "__main__":
    main()
