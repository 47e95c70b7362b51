"""Composition root of the project service: settings, database, the services that hold
project data (for the delete cascade), HTTP + gRPC, and the deletion retry loop."""

from mlstudio.common import clients, logs, metrics, mongo, runner, settings as settings_mod

from .app import build_grpc, create_app
from .core import ProjectCore
from .repository import ProjectRepository
from .settings import ProjectSettings


def data_owners(settings):
    """Clients of the deployed services that keep project data; videos first (their jobs stop
    and their frames go), then models, then images."""
    wanted = [
        (settings.video_grpc_addr, clients.VideoClient),
        (settings.model_grpc_addr, clients.ModelClient),
        (settings.image_grpc_addr, clients.ImageClient),
    ]
    return [client(address, settings.grpc_deadline_s) for address, client in wanted if address]


def main() -> None:
    settings = settings_mod.load(ProjectSettings)
    logs.configure("project", settings.log_level)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    db = mongo.connect(settings.mongo_uri, settings.database_name)
    repository = ProjectRepository(db)
    repository.ensure_indexes()
    core = ProjectCore(repository, data_owners(settings), final_sweep_after_s=settings.final_sweep_after_s)
    server, port, _health = build_grpc(settings, core)
    retry = runner.periodic("delete-retry", settings.delete_retry_s, core.retry_pending_deletions)
    app = create_app(settings, core, readiness={"mongodb": lambda: mongo.ping(db)})
    runner.serve(app, host=settings.http_host, http_port=settings.http_port, grpc_server=server, grpc_port=port, max_body_bytes=settings.max_json_body_bytes, background=[retry])


if __name__ == "__main__":
    main()
