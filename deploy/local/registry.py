"""The processes of the local stack, in one place.

To run a new process, add one entry to COMPONENTS: a domain service with `service(...)`, or a
worker or stand-in with `Component(...)`. The launcher starts them in this order (after MongoDB,
before Envoy), gives each the common environment plus its own, waits for its health check, and
routes the gateway to every `routed` one. Services not listed get an empty gRPC address, which
tells the others that they are not deployed.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from mlstudio.common.settings import ConfigError

from .config import Port, StackConfig
from .processes import HttpCheck, ProcessSpec, TcpCheck


@dataclasses.dataclass(frozen=True)
class Context:
    """What the processes' environments are made of, once MongoDB and the secrets are known."""

    config: StackConfig
    mongo_uri: str
    media_signing_key: str


def _no_extra_env(_context: Context) -> Mapping[str, str]:
    return {}


@dataclasses.dataclass(frozen=True)
class Component:
    """One process of the stack."""

    name: str  # in messages and logs; its data lives in <data>/<name>
    module: str  # started as `python -m <module>`
    ports: tuple[Port, ...] = ()
    health_port: str | None = None  # the port that says it is alive (None: alive = running)
    grpc_addr_var: str | None = None  # how the other processes find its gRPC port
    routed: bool = False  # an upstream of the gateway, which knows it by `name`
    extra_env: Callable[[Context], Mapping[str, str]] = _no_extra_env
    health_check: str = "http"  # "http": GET /healthz on health_port answers 200; "tcp": it accepts connections

    def port_for(self, child_var: str) -> Port | None:
        return next((port for port in self.ports if port.child_var == child_var), None)


def metrics_port(name: str, port: int) -> Port:
    """A process's Prometheus endpoint (loopback, never routed by the gateway); it moves with
    <NAME>_METRICS_PORT."""
    return Port(f"{name} metrics", f"{name.upper().replace('-', '_')}_METRICS_PORT", port, child_var="METRICS_PORT")


def service(name: str, *, http_port: int, grpc_port: int, metrics: int, extra_env: Callable[[Context], Mapping[str, str]] = _no_extra_env) -> Component:
    """A domain service (`services/<name>/<name>_service`): REST behind the gateway, gRPC for the
    other services, metrics for Prometheus; its ports move with <NAME>_HTTP_PORT, <NAME>_GRPC_PORT
    and <NAME>_METRICS_PORT."""
    upper = name.upper()
    return Component(
        name=name,
        module=f"{name}_service",
        ports=(
            Port(f"{name} http", f"{upper}_HTTP_PORT", http_port, child_var="HTTP_PORT"),
            Port(f"{name} grpc", f"{upper}_GRPC_PORT", grpc_port, child_var="GRPC_PORT"),
            metrics_port(name, metrics),
        ),
        health_port=f"{name} http",
        grpc_addr_var=f"{upper}_GRPC_ADDR",
        routed=True,
        extra_env=extra_env,
    )


def _user_env(context: Context) -> Mapping[str, str]:
    return {"JWT_PRIVATE_KEY_FILE": str(context.config.secrets_dir / "jwt-signing-key.pem")}


TFSERVING_PORT = Port("tfserving grpc", "TFSERVING_PORT", 8500, child_var="TFSERVING_PORT")


def tfserving_socket(config: StackConfig) -> Path:
    """Where TF Serving serves gRPC: a unix socket in its own data directory, the one place it
    may write (it runs confined, without a network of its own; see tfserving_standin.sandbox)."""
    return config.data_dir / "tfserving" / "grpc.sock"


def _tfserving_files(context: Context) -> Mapping[str, str]:
    """TF Serving's model repository and config file, shared by TF Serving and the model service."""
    base = context.config.data_dir / "model" / "tfserving-models"
    return {"TFSERVING_MODEL_BASE": str(base), "TFSERVING_CONFIG_FILE": str(base / "models.config")}


def _tfserving_env(context: Context) -> Mapping[str, str]:
    return {**_tfserving_files(context), "TFSERVING_SOCKET": str(tfserving_socket(context.config))}


def _model_env(context: Context) -> Mapping[str, str]:
    return {**_tfserving_files(context), "TFSERVING_ADDR": f"unix:{tfserving_socket(context.config)}",
            "PRETRAINED_DIR": os.environ.get("PRETRAINED_DIR", "")}  # the built-in models (`make pretrained`)


def _trainer_env(context: Context) -> Mapping[str, str]:
    return _model_env(context)


COMPONENTS: tuple[Component, ...] = (
    service("user", http_port=8101, grpc_port=9101, metrics=9201, extra_env=_user_env),
    service("project", http_port=8102, grpc_port=9102, metrics=9202),
    service("image", http_port=8103, grpc_port=9103, metrics=9203),
    # The real tensorflow_model_server when it is on PATH, else the local stand-in; confined by
    # bwrap: it sees the model repository read-only and serves on a unix socket, nothing else.
    Component(name="tfserving", module="tfserving_standin.launch", ports=(TFSERVING_PORT,), extra_env=_tfserving_env),
    service("model", http_port=8104, grpc_port=9104, metrics=9204, extra_env=_model_env),
    service("video", http_port=8105, grpc_port=9105, metrics=9205),
    # Splits uploaded videos into labelled frames (jobs leased from the video service's database).
    Component(name="video-worker", module="video_service.worker", ports=(metrics_port("video-worker", 9206),)),
    # Trains models (jobs leased from the model service's database) and registers them as the model
    # service does; training scripts never see the stack's data directory.
    Component(name="model-trainer", module="model_service.trainer", ports=(metrics_port("model-trainer", 9207),),
              extra_env=_trainer_env),
)

# Every service's gRPC address variable (see mlstudio.common.settings.ServiceSettings).
GRPC_ADDR_VARS = ("USER_GRPC_ADDR", "PROJECT_GRPC_ADDR", "IMAGE_GRPC_ADDR", "MODEL_GRPC_ADDR", "VIDEO_GRPC_ADDR")


def declared_ports(components: tuple[Component, ...] = COMPONENTS) -> list[Port]:
    return [port for component in components for port in component.ports]


def selected(config: StackConfig, components: tuple[Component, ...] = COMPONENTS) -> tuple[Component, ...]:
    """The components to run: all, or those named in MLSTUDIO_ONLY (in registry order)."""
    if not config.only:
        return components
    unknown = set(config.only) - {component.name for component in components}
    if unknown:
        raise ConfigError(f"MLSTUDIO_ONLY names unknown components {sorted(unknown)}; known: {[c.name for c in components]}")
    return tuple(component for component in components if component.name in config.only)


def grpc_addresses(config: StackConfig, components: tuple[Component, ...] = COMPONENTS) -> dict[str, str]:
    """Every gRPC address variable: 127.0.0.1:<port> for the listed services, empty for the others."""
    addresses = dict.fromkeys(GRPC_ADDR_VARS, "")
    for component in components:
        grpc = component.port_for("GRPC_PORT")
        if component.grpc_addr_var and grpc is not None:
            addresses[component.grpc_addr_var] = f"127.0.0.1:{config.ports[grpc.name]}"
    return addresses


def component_env(context: Context, component: Component, components: tuple[Component, ...] = COMPONENTS) -> dict[str, str]:
    """The environment of one process: what every service reads, then the component's own."""
    config = context.config
    environment = {
        "PYTHONPATH": config.pythonpath,
        "PYTHONUNBUFFERED": "1",
        "HTTP_HOST": "127.0.0.1",
        "MONGO_URI": context.mongo_uri,
        "DATA_DIR": str(config.data_dir / component.name),
        "STORAGE_URL": config.storage_url,
        "MEDIA_SIGNING_KEY": context.media_signing_key,
        "PUBLIC_BASE_URL": config.gateway_url,
        "AUTH_REQUIRED": "true" if config.auth_required else "false",
        "LOG_LEVEL": config.log_level,
        # the gateway's body limits, for services to apply to chunked bodies too
        "MAX_JSON_BODY_BYTES": str(config.max_json_body_bytes),
        "MAX_IMAGE_UPLOAD_BYTES": str(config.max_image_upload_bytes),
        "MAX_VIDEO_UPLOAD_BYTES": str(config.max_video_upload_bytes),
        "MAX_MODEL_UPLOAD_BYTES": str(config.max_model_upload_bytes),
        **grpc_addresses(config, components),
    }
    for port in component.ports:
        if port.child_var:
            environment[port.child_var] = str(config.ports[port.name])
    environment.update(component.extra_env(context))
    return environment


def process_specs(context: Context, components: tuple[Component, ...] = COMPONENTS) -> list[ProcessSpec]:
    """What the supervisor runs, in start order."""
    specs = []
    for component in components:
        check = None
        if component.health_port is not None:
            port = context.config.ports[component.health_port]
            check = TcpCheck(port) if component.health_check == "tcp" else HttpCheck(port, "/healthz")
        specs.append(
            ProcessSpec(
                name=component.name,
                argv=(sys.executable, "-m", component.module),
                env=component_env(context, component, components),
                cwd=context.config.repo_root,
                ready=check,
            )
        )
    return specs
