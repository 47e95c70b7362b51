"""Composition root of the project service: settings, database, the services that hold
project data (for the delete cascade), HTTP + gRPC, the worker thread that runs the delete
cascades queued by deletes, and the deletion retry loop.

The cascade jobs run in a thread of this process: they only call other services, and being
lease-based jobs in this service's database, any replica's thread may take one over."""

import os
import socket
import threading

from mlstudio.common import clients, jobs, logs, metrics, mongo, runner, settings as settings_mod

from .app import build_grpc, create_app
from .core import DELETE_KIND, DeleteJob, ProjectCore
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
    queue = jobs.JobQueue(db.jobs, lease_s=settings.delete_job_lease_s)
    queue.ensure_indexes()
    core = ProjectCore(repository, data_owners(settings), final_sweep_after_s=settings.final_sweep_after_s, cascades=queue)
    worker = jobs.Worker(queue, {DELETE_KIND: DeleteJob(core)}, owner=f"project-{socket.gethostname()}-{os.getpid()}")
    cascades = threading.Thread(target=worker.run_forever, daemon=True, name="delete-cascades")
    server, port, _health = build_grpc(settings, core)
    retry = runner.periodic("delete-retry", settings.delete_retry_s, core.retry_pending_deletions)
    app = create_app(settings, core, readiness={"mongodb": lambda: mongo.ping(db)})
    runner.serve(app, host=settings.http_host, http_port=settings.http_port, grpc_server=server, grpc_port=port, max_body_bytes=settings.max_json_body_bytes, background=[retry, cascades])


if __name__ == "__main__":
    main()
