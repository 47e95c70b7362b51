"""Starts TF Serving for the local stack, confined: the real `tensorflow_model_server` when it is
on PATH, else the stand-in, on the same flags, under bubblewrap (see sandbox.py).

The launcher runs `python -m tfserving_standin.launch` with, in the environment:

    TFSERVING_SOCKET           the unix socket TF Serving serves gRPC on (the model service's
                               TFSERVING_ADDR is `unix:<it>`); its directory is the only one TF
                               Serving may write
    TFSERVING_MODEL_BASE       the model repository (read-only to TF Serving)
    TFSERVING_CONFIG_FILE      the model config file (read-only to TF Serving)
    TFSERVING_PORT             the TCP port, inside the sandbox's own network namespace only
    TFSERVING_REQUIRE_SANDBOX  true: refuse to start where bwrap cannot confine TF Serving

This creates the directories and an empty model config file when there is none yet (the real
server refuses to start without one; the model service rewrites it), then replaces itself with
the confined server, so signals reach bwrap, which takes the server down with it. Where bwrap
cannot run (not installed, or no namespaces, as in many containers) the server starts
unconfined, still with an empty environment, after a loud warning; or, with
TFSERVING_REQUIRE_SANDBOX=true, not at all.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from mlstudio.common.settings import ConfigError, env, load

from . import sandbox, server_command

EMPTY_CONFIG = "model_config_list {\n}\n"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclasses.dataclass(frozen=True)
class LaunchSettings:
    """What the launcher reads (the local stack's registry sets all but TFSERVING_REQUIRE_SANDBOX)."""

    socket: Path = env("TFSERVING_SOCKET", Path("tfserving.sock"), help="the unix socket TF Serving serves gRPC on; its directory is the only one TF Serving may write")
    model_base: Path = env("TFSERVING_MODEL_BASE", Path("tfserving-models"), help="the model repository (read-only to TF Serving)")
    config_file: Path = env("TFSERVING_CONFIG_FILE", Path(""), help="the model config file, read-only to TF Serving (default <model base>/models.config)")
    port: int = env("TFSERVING_PORT", 8500, help="TF Serving's TCP port, inside its sandbox's own network namespace only")
    require_sandbox: bool = env("TFSERVING_REQUIRE_SANDBOX", False, help="true: refuse to start TF Serving where bwrap cannot confine it (default: start it unconfined, with a loud warning)")

    @property
    def socket_path(self) -> Path:
        return self.socket.absolute()

    @property
    def model_base_path(self) -> Path:
        return self.model_base.resolve()

    @property
    def config_path(self) -> Path:
        configured = self.config_file if str(self.config_file) not in ("", ".") else self.model_base_path / "models.config"
        return configured.resolve()


def confined(command: list[str], socket_path: Path, model_base: Path, config_file: Path, *, bwrap: str = "bwrap") -> list[str]:
    """`command` in TF Serving's sandbox over these files: the one source of the sandbox's
    arguments, for the server and for the tests that look inside it."""
    _python, python_dirs = sandbox.python_paths()
    read_only = [*python_dirs, sandbox.PACKAGE_DIR, model_base, config_file]
    env = sandbox.clean_env({"PYTHONPATH": str(sandbox.PACKAGE_DIR.parent)})
    return sandbox.bwrap_argv(command, read_only=read_only, writable=[socket_path.parent], env=env, bwrap=bwrap)


def confined_command(socket_path: Path, model_base: Path, config_file: Path, port: int, *, bwrap: str = "bwrap") -> list[str]:
    """The bwrap command line that runs TF Serving over these files."""
    python, _dirs = sandbox.python_paths()
    command = server_command(port, str(config_file), grpc_socket_path=str(socket_path), python=python)
    return confined(command, socket_path, model_base, config_file, bwrap=bwrap)


def prepare(socket_path: Path, model_base: Path, config_file: Path) -> None:
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        raise SystemExit(f"TFSERVING_SOCKET is {len(str(socket_path))} characters long; unix sockets allow {MAX_SOCKET_PATH}: "
                         "choose a shorter data directory")
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)  # left by a server that was killed
    model_base.mkdir(parents=True, exist_ok=True)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    if not config_file.exists():
        config_file.write_text(EMPTY_CONFIG)


def main() -> None:
    try:
        settings = load(LaunchSettings)
    except ConfigError as exc:
        raise SystemExit(f"TF Serving not started: {exc}") from None
    socket_path, model_base, config_file, port = settings.socket_path, settings.model_base_path, settings.config_path, settings.port
    prepare(socket_path, model_base, config_file)
    bwrap = sandbox.find_bwrap()
    why_not = sandbox.usable(bwrap)
    if not why_not:
        command = confined_command(socket_path, model_base, config_file, port, bwrap=bwrap)
        print(f"starting TF Serving confined by bwrap on unix:{socket_path}: {' '.join(command)}", file=sys.stderr, flush=True)
        os.execv(command[0], command)
    if settings.require_sandbox:
        raise SystemExit(f"TF Serving not started: it must run confined (TFSERVING_REQUIRE_SANDBOX=true) and {why_not}")
    banner = "!" * 78
    print(f"{banner}\nWARNING: TF Serving runs UNCONFINED: {why_not}.\nModel graphs then run with this user's files and "
          f"network (only the environment is cleared).\nInstall bubblewrap, or set TFSERVING_REQUIRE_SANDBOX=true to refuse.\n"
          f"{banner}", file=sys.stderr, flush=True)
    python, _dirs = sandbox.python_paths()
    command = server_command(port, str(config_file), grpc_socket_path=str(socket_path), python=python)
    os.execve(command[0], command, sandbox.clean_env({"PYTHONPATH": str(sandbox.PACKAGE_DIR.parent)}))


if __name__ == "__main__":
    main()
