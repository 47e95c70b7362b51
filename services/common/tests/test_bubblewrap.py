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
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

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


MASKED_PROC_CHECK = textwrap.dedent("""
    import json, os, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    import bubblewrap
    payload = '''
    import json, os
    pids = [name for name in os.listdir("/proc") if name.isdigit()]
    secrets = []
    for pid in pids:
        try:
            secrets.append(open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"))
        except OSError:
            pass
    try:
        open("/proc/self/comm", "w").write("x")
        written = True
    except OSError:
        written = False
    print(json.dumps({"pids": len(pids), "secrets": [s for s in secrets if "SECRET" in s], "exe": os.readlink("/proc/self/exe"), "written": written}))
    '''
    command = bubblewrap.command("bwrap", privileged=False, env={}, tmp=sys.argv[2], chdir="/",
                                 argv=["/usr/bin/python3", "-c", payload])
    finished = subprocess.run(command, capture_output=True, timeout=60)
    print(json.dumps({"fresh_proc": bubblewrap.fresh_proc("bwrap", False), "code": finished.returncode,
                      "nested_userns_blocked": bubblewrap.nested_userns_blocked("bwrap"),
                      "stderr": finished.stderr.decode(), "inside": finished.stdout.decode()}))
""")


@pytest.mark.skipif(os.getuid() != 0, reason="making a container-like /proc (mount namespace, masked path) needs root")
def test_where_a_new_proc_is_refused_the_sandbox_sees_the_containers_read_only():
    """As in a container whose runtime masks paths of /proc (Docker's /proc/kcore...) and mounts
    /proc/sys read-only, an unprivileged bwrap can neither mount a /proc of its own nor forbid
    nested user namespaces: the sandbox still runs, with the container's /proc read-only, where it
    lists processes but reads no other process's environment."""
    shared = Path(tempfile.mkdtemp(prefix="masked-proc-"))  # pytest's base directory is private to root
    (shared / "tmp").mkdir()
    (shared / "bubblewrap.py").write_text(Path(bubblewrap.__file__).read_text())
    (shared / "check.py").write_text(MASKED_PROC_CHECK)
    shared.chmod(0o755)
    (shared / "tmp").chmod(0o777)
    nobody = "setpriv --reuid 65534 --regid 65534 --clear-groups"
    script = (f"mount --bind /dev/null /proc/cpuinfo && "  # a masked path, as a container runtime's
              f"mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "  # and a read-only /proc/sys
              f"({nobody} env SECRET=hunter2 /usr/bin/python3 -c 'import time; time.sleep(120)' &) && "
              f"exec {nobody} /usr/bin/python3 {shared}/check.py {shared} {shared}/tmp")
    try:
        finished = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
                                   "sh", "-c", script], capture_output=True, timeout=120)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert finished.returncode == 0, finished.stderr.decode()
    report = json.loads(finished.stdout)
    assert report["fresh_proc"] is False
    assert report["nested_userns_blocked"] is False  # --disable-userns writes to /proc/sys
    assert report["code"] == 0, report["stderr"]
    inside = json.loads(report["inside"])
    assert inside["pids"] >= 3  # the namespace's own processes, the secret holder among them
    assert inside["secrets"] == []
    assert inside["exe"] == "/usr/bin/python3" or inside["exe"].startswith("/usr/bin/python3")
    assert inside["written"] is False
