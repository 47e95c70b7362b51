"""The shared bubblewrap command (`mlstudio.common.bubblewrap`) run for real: a Python child sees
nothing of the host but what it was given (no data directory with its secrets, no network, none
of the parent's environment), writes only where it was given, and `probe` says why bwrap cannot
run where it cannot.

Like the training sandbox's tests, these need bubblewrap and a machine where it can make its
namespaces (root, or unprivileged user namespaces allowed), and assert that it did.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from mlstudio.common import bubblewrap

PAYLOAD = textwrap.dedent("""
    import json, os, socket, sys
    found = {}
    def attempt(name, action):
        try:
            found[name] = action()
        except Exception as exc:
            found[name] = type(exc).__name__
    attempt("secret", lambda: open(sys.argv[1]).read())
    attempt("data_dir", lambda: os.listdir(sys.argv[2]))
    attempt("network", lambda: socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=2) and "connected")
    attempt("written", lambda: open("/out/result", "w").write("ok"))
    attempt("input_written", lambda: open("/in/model", "w").write("x"))
    attempt("input", lambda: open("/in/model").read())
    found["env"] = sorted(os.environ)
    found["pid"] = os.getpid()
    print(json.dumps(found))
""")


@pytest.fixture
def stack_data(tmp_path):
    """A data directory as the stack keeps it: the JWT signing key, a database file, objects."""
    data = tmp_path / "data"
    (data / "secrets").mkdir(parents=True)
    (data / "secrets" / "jwt-private.pem").write_text("-----BEGIN PRIVATE KEY-----")
    (data / "mongo").mkdir()
    (data / "mongo" / "collection-0.wt").write_text("users")
    return data


def test_a_child_reads_no_secret_reaches_no_network_and_inherits_no_environment(tmp_path, stack_data, monkeypatch):
    monkeypatch.setenv("MONGO_URI", "mongodb://admin:hunter2@db:27017")
    work = tmp_path / "work"
    (work / "tmp").mkdir(parents=True)
    (work / "out").mkdir()
    (work / "model").write_text("weights")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    command = bubblewrap.command(
        "bwrap", privileged=os.getuid() == 0, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        readable=bubblewrap.python_paths(), tmp=work / "tmp", dirs=["/in"],
        binds=[bubblewrap.Bind(work / "model", "/in/model"), bubblewrap.Bind(work / "out", "/out", writable=True)],
        chdir="/out", argv=[sys.executable, "-s", "-c", PAYLOAD, str(stack_data / "secrets" / "jwt-private.pem"),
                            str(stack_data), str(listener.getsockname()[1])])
    with listener:
        finished = subprocess.run(command, capture_output=True, timeout=60)
    assert finished.returncode == 0, finished.stderr.decode()
    found = json.loads(finished.stdout)
    assert found["secret"] == "FileNotFoundError" and found["data_dir"] == "FileNotFoundError"
    assert found["network"] in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert found["env"] == ["LANG", "PATH", "PWD"]  # what it was given, and the PWD of --chdir
    assert found["written"] == 2 and (work / "out" / "result").read_text() == "ok"
    assert found["input"] == "weights" and found["input_written"] in ("OSError", "PermissionError")
    assert (work / "model").read_text() == "weights"
    assert found["pid"] <= 2  # a PID namespace of its own: bwrap's PID 1 and the child


def test_the_python_installation_is_read_only_inside(tmp_path):
    (tmp_path / "tmp").mkdir()
    target = os.path.join(sys.prefix, "written-by-the-sandbox")
    command = bubblewrap.command("bwrap", privileged=os.getuid() == 0, env={}, readable=bubblewrap.python_paths(),
                                 tmp=tmp_path / "tmp", chdir="/", argv=[sys.executable, "-s", "-c", f"open({target!r}, 'w')"])
    finished = subprocess.run(command, capture_output=True, timeout=60)
    assert finished.returncode != 0 and b"Read-only file system" in finished.stderr
    assert not os.path.exists(target)


def test_the_probe_says_why_bwrap_cannot_run(tmp_path):
    assert bubblewrap.probe("bwrap") is None
    assert bubblewrap.probe(str(tmp_path / "no-such-bwrap")) == "bubblewrap (bwrap) is not installed"
    refusing = tmp_path / "bwrap"
    refusing.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace.' >&2\nexit 1\n")
    refusing.chmod(0o755)
    assert bubblewrap.probe(str(refusing)) == "No permissions to create new namespace."


def test_a_bind_inside_a_private_directory_is_reachable_by_an_unprivileged_user(tmp_path):
    """`dirs` are made 0755: bwrap would copy the 0700 of the private directory above the source."""
    os.chmod(tmp_path, 0o700)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "model").write_text("weights")
    os.chmod(tmp_path / "model", 0o644)
    command = bubblewrap.command("bwrap", privileged=os.getuid() == 0, env={}, tmp=tmp_path / "tmp", dirs=["/in"],
                                 binds=[bubblewrap.Bind(tmp_path / "model", "/in/model")], chdir="/",
                                 argv=["/usr/bin/stat", "-c", "%a", "/in"])
    finished = subprocess.run(command, capture_output=True, timeout=60)
    assert finished.stdout.strip() == b"755", finished.stderr
