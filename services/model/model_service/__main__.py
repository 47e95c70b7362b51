"""Composition root of the model service: settings, database, object storage, TF Serving's
repository and client, the converter, HTTP + gRPC, and the loop that keeps TF Serving in step."""
import logging
import threading
import time

from mlstudio.common import clients, logs, media_urls, mongo, runner, settings as settings_mod, storage

from .app import build_grpc, create_app, max_body_bytes
from .conversion import SubprocessConverter
from .core import Limits, ModelCore, served_versions
from .repository import ModelRepository
from .serving import Serving
from .settings import ModelSettings
from .tfserving_client import TFServingClient
from .tfserving_repository import TFServingRepository

log = logging.getLogger(__name__)


def reconcile_loop(core, period_s: float, stop: threading.Event) -> None:
    """Reconciles every `period_s`; retries sooner while TF Serving is away."""
    wait = period_s
    while not stop.wait(wait):
        try:
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


def build_core(settings: ModelSettings, db) -> ModelCore:
    if not settings.project_grpc_addr:
        raise settings_mod.ConfigError("required setting PROJECT_GRPC_ADDR is not set")
    repository = ModelRepository(db)
    repository.ensure_indexes()
    tfserving_repository = TFServingRepository(settings.model_base, settings.config_file, settings.tfserving_model_base_in_server or None)
    tfserving_repository.prepare()
    client = TFServingClient(settings.tfserving_addr, predict_deadline_s=settings.tfserving_predict_deadline_s,
                             control_deadline_s=settings.tfserving_control_deadline_s, reload_deadline_s=settings.model_load_timeout_s)
    serving = Serving(tfserving_repository, client, lambda: served_versions(repository), load_timeout_s=settings.model_load_timeout_s)
    converter = SubprocessConverter(timeout_s=settings.convert_timeout_s, dynamic_size=settings.dynamic_input_size,
                                    concurrency=settings.convert_concurrency)
    limits = Limits(max_model_bytes=settings.model_upload_max_bytes, max_batch=settings.predict_max_batch,
                    registration_claim_s=settings.convert_timeout_s + settings.model_load_timeout_s + 600)
    core = ModelCore(
        repository,
        clients.ProjectClient(settings.project_grpc_addr, settings.grpc_deadline_s),
        storage.open_store(settings.object_storage_url),
        serving,
        converter,
        media_urls.MediaSigner(settings.media_signing_key, settings.public_base_url, settings.media_url_ttl_s),
        limits,
    )
    return core


def main() -> None:
    settings = settings_mod.load(ModelSettings)
    logs.configure("model", settings.log_level)
    db = mongo.connect(settings.mongo_uri, settings.database_name)
    core = build_core(settings, db)
    first_reconcile(core, settings.startup_tfserving_wait_s)
    server, port, _health = build_grpc(settings, core)
    stop = threading.Event()
    reconcile = threading.Thread(target=reconcile_loop, args=(core, settings.reconcile_s, stop), daemon=True, name="reconcile")
    readiness = {"mongodb": lambda: mongo.ping(db), "storage": core.store.ping}
    app = create_app(settings, core, readiness=readiness)
    runner.serve(app, host=settings.http_host, http_port=settings.http_port, grpc_server=server, grpc_port=port,
                 max_body_bytes=max_body_bytes(settings), background=[reconcile])


if __name__ == "__main__":
    main()
