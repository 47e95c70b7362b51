"""TF Serving's sandbox, seen from inside: a probe run with the very arguments the launcher gives
the server finds the model repository (read-only) and its socket directory, and nothing else of
the machine's data: no secrets, no object storage, no other code, no credentials in its
environment, no network but its own loopback."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tfserving_standin import launch, sandbox

PROBE = r"""
import json, os, socket, sys
paths = json.loads(sys.argv[1])
def writable(directory):
    try:
        with open(os.path.join(directory, "probe-write"), "w") as out:
            out.write("x")
        return True
    except OSError:
        return False
def connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False
print(json.dumps({
    "seen": {name: os.path.exists(path) for name, path in paths["look"].items()},
    "repository_writable": writable(paths["repository"]),
    "socket_dir_writable": writable(paths["socket_dir"]),
    "environment": sorted(os.environ),
    "host_port_reachable": connects(paths["host_port"]),
    "pid": os.getpid(),
}))
"""


@pytest.fixture
def machine(tmp_path):
    """A stack's data directory: a repository and config, a socket directory, and what the
    server must not see (secrets, objects, MongoDB files)."""
    data = tmp_path / "data"
    files = {
        "secret": data / "secrets" / "jwt-signing-key.pem",
        "media_key": data / "secrets" / "media-signing-key",
        "object": data / "objects" / "images" / "1" / "1.png",
        "mongo": data / "mongo" / "WiredTiger",
        "model_service_data": data / "model" / "uploads" / "pending.h5",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("private")
    repository = data / "model" / "tfserving-models"
    (repository / "model-1" / "1").mkdir(parents=True)
    (repository / "model-1" / "1" / "saved_model.pb").write_bytes(b"graph")
    config = repository / "models.config"
    config.write_text("model_config_list {\n}\n")
    return data, files, repository, config, data / "tfserving" / "grpc.sock"


def test_the_server_sees_only_its_repository_read_only_and_no_credentials(machine):
    why_not = sandbox.usable(sandbox.find_bwrap())
    assert not why_not, f"TF Serving cannot be confined on this machine: {why_not}"
    data, files, repository, config, socket_path = machine
    launch.prepare(socket_path, repository, config)
    with socket.socket() as listener:  # a service of the host, on loopback
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        paths = {
            "look": {**{name: str(path) for name, path in files.items()},
                     "model": str(repository / "model-1" / "1" / "saved_model.pb"),
                     "config": str(config),
                     "model_service_code": str(Path(launch.__file__).resolve().parents[1] / "model_service"),
                     "common_code": str(Path(launch.__file__).resolve().parents[2] / "common"),
                     "tests": __file__},
            "repository": str(repository / "model-1"),
            "socket_dir": str(socket_path.parent),
            "host_port": listener.getsockname()[1],
        }
        python, _dirs = sandbox.python_paths()
        command = launch.confined([python, "-c", PROBE, json.dumps(paths)], socket_path, repository, config,
                                  bwrap=sandbox.find_bwrap())
        secrets_env = {**os.environ, "MONGO_URI": "mongodb://root:pw@127.0.0.1/", "MEDIA_SIGNING_KEY": "k",
                       "STORAGE_URL": "s3://key:secret@host/bucket", "JWT_PRIVATE_KEY_FILE": str(files["secret"])}
        result = subprocess.run(command, env=secrets_env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["seen"] == {"secret": False, "media_key": False, "object": False, "mongo": False, "model_service_data": False,
                            "model": True, "config": True, "model_service_code": False, "common_code": False, "tests": False}
    assert seen["repository_writable"] is False and seen["socket_dir_writable"] is True
    assert not {"MONGO_URI", "MEDIA_SIGNING_KEY", "STORAGE_URL", "JWT_PRIVATE_KEY_FILE"} & set(seen["environment"])
    assert seen["host_port_reachable"] is False
    assert seen["pid"] < 10  # its own pid namespace


def test_the_sandbox_keeps_the_python_environment_reachable_through_symlinks():
    python, directories = sandbox.python_paths()
    assert Path(python).parent.parent == Path(sys.prefix).resolve()
    assert Path(sys.base_prefix).resolve() in directories
