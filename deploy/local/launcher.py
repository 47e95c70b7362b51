"""Runs the whole ML Studio stack on this machine, without containers.

ML Studio is several processes (MongoDB, one per service, the Envoy gateway) that must share
ports, secrets and a data directory, start in dependency order and stop together. This is the
one place that knows how:

    python -m deploy.local.launcher run     # foreground; Ctrl-C stops everything; a crashed process is restarted
    python -m deploy.local.launcher up      # background; returns once everything is healthy
    python -m deploy.local.launcher down    # stops what `up` (or `run`) started
    python -m deploy.local.launcher status  # says what runs

`make run`, `make up` and `make down` call it. Settings come from the environment (see
config.py); the processes come from registry.py; `up`, `down` and `status` live in
background.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from mlstudio.common.settings import ConfigError

from . import mongo, preflight, registry, state
from .background import down, status, up
from .config import MONGO_PORT, StackConfig, load
from .envoy import envoy_spec, gateway_config
from .processes import RestartPolicy, StartupError, StopRequested, Supervisor

log = logging.getLogger("launcher")


# --- data directory and secrets ---------------------------------------------------------------

def prepare_data_dir(config: StackConfig, components: tuple[registry.Component, ...]) -> None:
    for directory in (config.data_dir, config.logs_dir):
        directory.mkdir(parents=True, exist_ok=True)
    config.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for component in components:
        (config.data_dir / component.name).mkdir(exist_ok=True)


def ensure_secret(path: Path) -> str:
    """The secret in `path`, created (random, mode 0600) on first use and kept afterwards."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # the first writer wins
        except FileExistsError:
            pass
        tmp.unlink()
    value = path.read_text().strip()
    if not value:
        raise StartupError(f"{path} is empty; delete it and a new secret is made")
    return value


# --- run ------------------------------------------------------------------------------------

def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def request_stop(signum, _frame):
        if not stop.is_set():
            log.info("%s received; stopping the stack", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    return stop


def _start_mongod(supervisor: Supervisor, config: StackConfig, stop: threading.Event) -> str:
    spec = mongo.mongod_spec(config)
    supervisor.wait_ready(spec, supervisor.start(spec), config.startup_timeout_s)
    port = config.ports[MONGO_PORT.name]
    mongo.ensure_replica_set(port, config.startup_timeout_s, stop)
    return mongo.uri(port)


def _start_stack(supervisor: Supervisor, config: StackConfig, components: tuple[registry.Component, ...], stop: threading.Event) -> None:
    """MongoDB, then the registry's processes (started together, each awaited), then Envoy."""
    if config.starts_mongod:
        mongo_uri = _start_mongod(supervisor, config, stop)
    else:
        log.info("using the MongoDB at MONGO_URI")
        mongo_uri = config.mongo_uri
    media_key = ensure_secret(config.secrets_dir / "media-signing-key")
    context = registry.Context(config=config, mongo_uri=mongo_uri, media_signing_key=media_key)
    started = [(spec, supervisor.start(spec)) for spec in registry.process_specs(context, components)]
    for spec, process in started:
        supervisor.wait_ready(spec, process, config.startup_timeout_s)
    gateway = envoy_spec(config, components)
    supervisor.wait_ready(gateway, supervisor.start(gateway), config.startup_timeout_s)


def run(config: StackConfig, components: tuple[registry.Component, ...]) -> int:
    """Starts everything, stays in the foreground until a signal (restarting any process that
    exits meanwhile, with backoff), and stops everything in reverse order."""
    other = state.running_pid(config)
    if other is not None and other != os.getpid():
        log.error("a stack already runs from %s (pid %d); stop it with `make down`", config.data_dir, other)
        return 1
    problems = preflight.busy_ports(config, components)
    if problems:
        for problem in problems:
            log.error("%s", problem)
        return 2
    stop = _stop_on_signals()
    if not config.auth_required:
        log.warning("!" * 78)
        log.warning("AUTH_REQUIRED=false: requests without a token pass the gateway and services take")
        log.warning("the caller from ?user_id=. Anyone who can reach %s can act as any user.", config.gateway_url)
        log.warning("!" * 78)
    prepare_data_dir(config, components)
    config.pid_file.write_text(str(os.getpid()))
    supervisor = Supervisor(stop, RestartPolicy(config.restart_delay_s, config.restart_max_delay_s, config.restart_reset_s))

    def record(pids: dict[str, int]) -> None:
        # `down` and `status` read the processes from here; keep it true across restarts.
        state.write_state(config, {"pid": os.getpid(), "url": config.gateway_url, "ports": dict(config.ports), "processes": pids})

    try:
        _start_stack(supervisor, config, components, stop)
        record(supervisor.pids)
        log.info("ML Studio is up: %s (Ctrl-C stops it)", config.gateway_url)
        supervisor.supervise(on_restart=record)
        return 0
    except StartupError as error:
        log.error("%s; stopping the stack", error)
        return 1
    except StopRequested:
        return 0
    finally:
        supervisor.stop_all()
        state.remove_own_files(config)
        log.info("stopped")


COMMANDS = {"run": run, "up": up, "down": down, "status": status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.launcher", description="Runs the ML Studio stack on this machine.")
    parser.add_argument("command", choices=COMMANDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [launcher] %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        config = load(registry.declared_ports())
        components = registry.selected(config)
        gateway_config(config, components)  # the gateway can route what runs
    except (ConfigError, ValueError) as error:
        log.error("%s", error)
        return 2
    return COMMANDS[args.command](config, components)


if __name__ == "__main__":
    sys.exit(main())
