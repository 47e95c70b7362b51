"""Composition root of the user service: settings, database, key, HTTP + gRPC."""
import logging

from mlstudio.common import logs, metrics, mongo, runner, settings as settings_mod

from . import keys
from .app import build_grpc, create_app
from .core import UserCore
from .repository import UserRepository
from .settings import UserSettings


def main() -> None:
    settings = settings_mod.load(UserSettings)
    logs.configure("user", settings.log_level)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    db = mongo.connect(settings.mongo_uri, settings.database_name)
    repository = UserRepository(db)
    repository.ensure_indexes()
    core = UserCore(repository, keys.load_or_create(settings.jwt_private_key_file), issuer=settings.jwt_issuer, token_ttl_s=settings.token_ttl_s)
    server, port, _health = build_grpc(settings, core)
    logging.getLogger(__name__).info("user service starting")
    runner.serve(create_app(settings, core, readiness={"mongodb": lambda: mongo.ping(db)}), host=settings.http_host, http_port=settings.http_port, grpc_server=server, grpc_port=port, max_body_bytes=settings.max_json_body_bytes)


if __name__ == "__main__":
    main()
