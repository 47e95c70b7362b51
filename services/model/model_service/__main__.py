"""Composition root of the model service: settings, database, object storage, TF Serving's
repository and client, the converter, HTTP + gRPC, and the loop that keeps TF Serving in step."""
import logging
import os
import socket
import threading
import time

from mlstudio.common import bubblewrap, logs, metrics, mongo, runner, settings as settings_mod

from .app import build_grpc, create_app, max_body_bytes
from .composition import build_core
from .pretrained import registration
from .settings import ModelSettings

log = logging.getLogger(__name__)


def reconcile_loop(core, period_s: float, stop: threading.Event, pretrained=None) -> None:
    """Reconciles every `period_s` (registering the built-in models still missing, from the
    `pretrained` directory); retries sooner while TF Serving is away."""
    wait = period_s
    while not stop.wait(wait):
        try:
            if pretrained is not None:
                registration.register_missing(core, pretrained)
            core.reconcile()
            wait = period_s
        except Exception as exc:  # noqa: BLE001 - keep trying; the failure is logged
            log.warning("reconciling TF Serving failed, will retry: %s", getattr(exc, "message", exc))
            wait = 1.0 if wait >= period_s else min(period_s, wait * 2)


def first_reconcile(core, wait_s: float) -> None:
    """Brings TF Serving in step before the service answers, so that a healthy stack serves its
    models; after `wait_s` the service starts anyway and the reconcile loop keeps trying."""
    give_up = time.monotonic() + wait_s
    while True:
        try:
            core.reconcile()
            return
        except Exception as exc:  # noqa: BLE001 - retried below, then by the loop
            if time.monotonic() >= give_up:
                log.warning("TF Serving is not in step yet, serving anyway: %s", getattr(exc, "message", exc))
                return
            time.sleep(0.5)


def readiness_checks(db, core) -> dict:
    """What /readyz asks: the database, object storage and TF Serving (without it nothing can be
    uploaded or used, only listed)."""
    return {"mongodb": lambda: mongo.ping(db), "storage": core.store.ping, "tfserving": core.serving.client.ping}


def evaluation_thread(core) -> threading.Thread | None:
    """The worker that runs evaluation jobs (predictions through TF Serving, a chart), in this
    process: they are short, and need nothing a training worker has. Several replicas share the
    jobs under leases; a replica that stops leaves its job to another once the lease expires."""
    if core.evaluations is None:
        return None
    worker = core.evaluations.worker(core, f"{socket.gethostname()}:{os.getpid()}:evaluations")
    return threading.Thread(target=worker.run_forever, daemon=True, name="evaluations")


def main() -> None:
    settings = settings_mod.load(ModelSettings)
    logs.configure("model", settings.log_level)
    # Model conversions run in children of this process, unconfined where bwrap is refused: they
    # must not read this process's credentials through /proc.
    bubblewrap.make_undumpable()
    metrics.serve(settings.metrics_host, settings.metrics_port)
    db = mongo.connect(settings.mongo_uri, settings.database_name)
    core = build_core(settings, db)
    metrics.watch_job_queue("trainings", db.training_jobs)
    metrics.watch_job_queue("evaluations", db.evaluation_jobs)
    started = time.monotonic()
    registration.register_all(core, settings.pretrained_path)
    log.info("built-in models checked in %.2fs", time.monotonic() - started)
    first_reconcile(core, settings.startup_tfserving_wait_s)
    server, port, _health = build_grpc(settings, core)
    stop = threading.Event()
    reconcile = threading.Thread(target=reconcile_loop, args=(core, settings.reconcile_s, stop, settings.pretrained_path), daemon=True, name="reconcile")
    app = create_app(settings, core, readiness=readiness_checks(db, core))
    evaluations = evaluation_thread(core)
    runner.serve(app, host=settings.http_host, http_port=settings.http_port, grpc_server=server, grpc_port=port,
                 max_body_bytes=max_body_bytes(settings), background=[reconcile] + ([evaluations] if evaluations else []))


if __name__ == "__main__":
    main()
