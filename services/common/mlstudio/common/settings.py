"""Typed settings read from the environment once, at start-up.

A service declares a dataclass whose fields carry their environment variable's name
(`env("NAME")`); `load(SettingsClass)` reads and converts them, and fails fast, naming the
variable, when a required one is missing or malformed. Nothing reads the environment elsewhere.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from pathlib import Path

_REQUIRED = object()


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the environment variable."""


def env(name: str, default=_REQUIRED, *, help: str = ""):
    """A settings field read from the environment variable `name`."""
    metadata = {"env": name, "help": help}
    if default is _REQUIRED:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _convert(name: str, raw: str, kind):
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw)
        if kind == tuple[str, ...]:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError:
        raise ConfigError(f"setting {name}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from None


T = typing.TypeVar("T")


def load(cls: type[T], environ: Mapping[str, str] | None = None, **overrides) -> T:
    """Builds `cls` from `environ` (default: the process environment); `overrides` win."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in overrides:
            continue
        name = field.metadata.get("env")
        if name is None:
            continue
        raw = environ.get(name)
        if raw is None or raw == "":
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"required setting {name} is not set")
            continue
        values[field.name] = _convert(name, raw, hints[field.name])
    return cls(**values, **overrides)


def require(settings, *names: str, why: str = "") -> None:
    """Fails fast, naming the environment variable, when one of the fields `names` of
    `settings` is empty: optional in general, but needed by this process."""
    variables = {field.name: field.metadata.get("env", field.name) for field in dataclasses.fields(settings)}
    for name in names:
        if not getattr(settings, name):
            raise ConfigError(f"required setting {variables[name]} is not set" + (f" ({why})" if why else ""))


def describe(cls) -> list[tuple[str, str, str]]:
    """(variable, default, help) for each setting of `cls`, for documentation."""
    rows = []
    for field in dataclasses.fields(cls):
        if "env" not in field.metadata:
            continue
        default = "(required)" if field.default is dataclasses.MISSING else repr(field.default)
        rows.append((field.metadata["env"], default, field.metadata.get("help", "")))
    return rows


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """Settings every service has. Services subclass it with their own fields."""

    service_name: str = "service"
    http_host: str = env("HTTP_HOST", "127.0.0.1", help="address the HTTP server binds")
    http_port: int = env("HTTP_PORT", 8080, help="HTTP (REST) port")
    grpc_host: str = env("GRPC_HOST", "127.0.0.1", help="address the gRPC server binds")
    grpc_port: int = env("GRPC_PORT", 50051, help="gRPC port")
    metrics_host: str = env("METRICS_HOST", "127.0.0.1", help="address the Prometheus metrics endpoint binds")
    metrics_port: int = env("METRICS_PORT", 0, help="port of the Prometheus metrics endpoint (GET /metrics); 0: none")
    mongo_uri: str = env("MONGO_URI", help="MongoDB connection string")
    mongo_db: str = env("MONGO_DB", "", help="database name (default mlstudio_<service>)")
    data_dir: Path = env("DATA_DIR", Path(".data"), help="local data directory")
    storage_url: str = env("STORAGE_URL", "", help="file:///path or s3://key:secret@host:port/bucket (default: DATA_DIR/objects)")
    media_signing_key: str = env("MEDIA_SIGNING_KEY", "", help="HMAC key of signed media URLs")
    media_url_ttl_s: int = env("MEDIA_URL_TTL_S", 3600, help="lifetime of a signed media URL")
    public_base_url: str = env("PUBLIC_BASE_URL", "http://127.0.0.1:8000", help="the gateway's URL as browsers see it")
    auth_required: bool = env("AUTH_REQUIRED", True, help="false: legacy mode, the caller is the user_id query parameter, "
                                                          "or, on a route naming one resource by id, its owner")
    grpc_deadline_s: float = env("GRPC_DEADLINE_S", 10.0, help="deadline of service-to-service calls")
    user_grpc_addr: str = env("USER_GRPC_ADDR", "", help="host:port of the user service's gRPC API")
    project_grpc_addr: str = env("PROJECT_GRPC_ADDR", "", help="host:port of the project service's gRPC API")
    image_grpc_addr: str = env("IMAGE_GRPC_ADDR", "", help="host:port of the image service's gRPC API (empty: not deployed)")
    model_grpc_addr: str = env("MODEL_GRPC_ADDR", "", help="host:port of the model service's gRPC API (empty: not deployed)")
    video_grpc_addr: str = env("VIDEO_GRPC_ADDR", "", help="host:port of the video service's gRPC API (empty: not deployed)")
    max_json_body_bytes: int = env("MAX_JSON_BODY_BYTES", 1 << 20, help="largest body of a JSON route (the gateway's limit too)")
    log_level: str = env("LOG_LEVEL", "INFO", help="DEBUG, INFO, WARNING or ERROR")

    @property
    def database_name(self) -> str:
        return self.mongo_db or f"mlstudio_{self.service_name}"

    @property
    def object_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'objects').resolve()}"
