"""The local stack's configuration, read from the environment once, at start-up.

Every port can be moved with a variable (GATEWAY_PORT, USER_HTTP_PORT, ...), so two stacks,
or a stack and the tests' own, can run side by side; data lives under MLSTUDIO_DATA_DIR.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from mlstudio.common.settings import ConfigError, env
from mlstudio.common.settings import load as load_settings

from gateway.render import DEFAULT_CORS_ORIGINS, GiB, MiB

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Port:
    """A port of the stack: `name` for messages, `env_var` moves it, `child_var` is the variable
    through which the process that listens on it learns it (empty: passed another way)."""

    name: str
    env_var: str
    default: int
    child_var: str = ""


# The ports of the processes the launcher itself runs; the registry declares the services'.
GATEWAY_PORT = Port("gateway", "GATEWAY_PORT", 8000)
ENVOY_ADMIN_PORT = Port("envoy admin", "ENVOY_ADMIN_PORT", 9901)
MONGO_PORT = Port("mongodb", "MONGO_PORT", 27117)
INFRASTRUCTURE_PORTS = (GATEWAY_PORT, ENVOY_ADMIN_PORT, MONGO_PORT)


@dataclasses.dataclass(frozen=True)
class StackConfig:
    data_dir: Path = env("MLSTUDIO_DATA_DIR", Path(".data"), help="where the stack keeps its data, logs and secrets")
    mongo_uri: str = env("MONGO_URI", "", help="an existing MongoDB to use instead of starting mongod")
    external_storage_url: str = env("STORAGE_URL", "", help="object storage (s3://key:secret@host:port/bucket) instead of <data>/objects")
    auth_required: bool = env("AUTH_REQUIRED", True, help="false: legacy mode, requests without a token pass the gateway")
    log_level: str = env("LOG_LEVEL", "INFO", help="the services' log level")
    cors_origins: tuple[str, ...] = env("CORS_ORIGINS", DEFAULT_CORS_ORIGINS, help="origins browsers may call the API from")
    upload_timeout_s: int = env("UPLOAD_TIMEOUT_S", 3600, help="how long the gateway waits for an upload's answer")
    max_json_body_bytes: int = env("MAX_JSON_BODY_BYTES", 1 * MiB, help="body limit of every route but uploads")
    max_image_upload_bytes: int = env("MAX_IMAGE_UPLOAD_BYTES", 256 * MiB, help="body limit of POST /images/...")
    max_video_upload_bytes: int = env("MAX_VIDEO_UPLOAD_BYTES", 2 * GiB, help="body limit of POST /videos/all")
    max_model_upload_bytes: int = env("MAX_MODEL_UPLOAD_BYTES", 2 * GiB, help="body limit of POST /models/all")
    startup_timeout_s: float = env("STARTUP_TIMEOUT_S", 120.0, help="how long a process may take to become healthy")
    restart_delay_s: float = env("RESTART_DELAY_S", 1.0, help="first delay before a process that exited is started again (doubles with each exit in a row)")
    restart_max_delay_s: float = env("RESTART_MAX_DELAY_S", 30.0, help="longest delay before a process that exited is started again")
    restart_reset_s: float = env("RESTART_RESET_S", 60.0, help="a process that ran this long starts its restart delays over")
    only: tuple[str, ...] = env("MLSTUDIO_ONLY", (), help="run only these registry components, e.g. user,project (default: all)")
    # Not from single variables: filled by `load`.
    ports: Mapping[str, int] = dataclasses.field(default_factory=dict)
    port_vars: Mapping[str, str] = dataclasses.field(default_factory=dict)
    repo_root: Path = REPO_ROOT

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "stack.pid"

    @property
    def state_file(self) -> Path:
        """Written by `run` once everything is healthy: its pid, URL and processes."""
        return self.data_dir / "stack.json"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[GATEWAY_PORT.name]}"

    @property
    def storage_url(self) -> str:
        return self.external_storage_url or f"file://{self.data_dir.resolve() / 'objects'}"

    @property
    def starts_mongod(self) -> bool:
        return not self.mongo_uri

    @property
    def pythonpath(self) -> str:
        """The repository root, the shared library and every service, for `python -m <pkg>`."""
        services = self.repo_root / "services"
        paths = [self.repo_root, services / "common"]
        paths += sorted(p for p in services.iterdir() if p.is_dir() and p.name != "common")
        inherited = os.environ.get("PYTHONPATH", "")
        return os.pathsep.join([str(p) for p in paths] + ([inherited] if inherited else []))


def _read_ports(environ: Mapping[str, str], declared: Iterable[Port]) -> tuple[dict[str, int], dict[str, str]]:
    ports, port_vars, owner = {}, {}, {}
    for port in declared:
        raw = environ.get(port.env_var) or str(port.default)
        try:
            number = int(raw)
        except ValueError:
            raise ConfigError(f"setting {port.env_var}={raw!r} is not a valid port") from None
        if not 0 < number < 65536:
            raise ConfigError(f"setting {port.env_var}={number} is not a valid port (1-65535)")
        if number in owner:
            raise ConfigError(f"{port.env_var} and {owner[number]} are both {number}; give each its own port")
        owner[number] = port.env_var
        ports[port.name] = number
        port_vars[port.name] = port.env_var
    return ports, port_vars


def load(declared_ports: Iterable[Port], environ: Mapping[str, str] | None = None) -> StackConfig:
    """The configuration from `environ` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    ports, port_vars = _read_ports(environ, [*INFRASTRUCTURE_PORTS, *declared_ports])
    config = load_settings(StackConfig, environ, ports=ports, port_vars=port_vars)
    return dataclasses.replace(config, data_dir=config.data_dir.resolve())
