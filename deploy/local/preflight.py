"""Checks made before anything starts, so a conflict fails at once with what to change."""
from __future__ import annotations

from . import registry
from .config import INFRASTRUCTURE_PORTS, MONGO_PORT, StackConfig
from .processes import port_is_free


def ports_in_use(config: StackConfig, components: tuple[registry.Component, ...]) -> list[str]:
    """The names of the ports the stack will listen on (MongoDB's only if it starts mongod)."""
    names = [port.name for port in INFRASTRUCTURE_PORTS if config.starts_mongod or port is not MONGO_PORT]
    return names + [port.name for port in registry.declared_ports(components)]


def busy_ports(config: StackConfig, components: tuple[registry.Component, ...]) -> list[str]:
    """A message for each port of the stack that something already listens on."""
    return [
        f"port {config.ports[name]} ({name}) is already in use; set {config.port_vars[name]} to another port"
        for name in ports_in_use(config, components)
        if not port_is_free(config.ports[name])
    ]
