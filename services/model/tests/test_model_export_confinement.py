"""The model converter's child process is confined: what a model's graph could reach if it ever got
past the op allowlist. The child here is the real exporter entry point (`exporter.main`: its
arguments, limits and change of user), with `export` replaced by a probe that reports what it
can open, connect to and read from its environment, as the graph would run there. Also: where
bwrap cannot run, conversions go on unconfined with a warning, or are refused when isolation is
required; and what the child hands back (its verdict, its SavedModel) is not trusted.

Like the training sandbox's tests, these need bubblewrap and a machine where it can make its
namespaces, and assert that it did.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlstudio.common import errors
from model_service import uploads
from model_service.conversion import ExportConfinement, SubprocessConverter

SECRETS = {"MONGO_URI": "mongodb://admin:hunter2@db:27017", "STORAGE_URL": "s3://key:topsecret@minio:9000/bucket",
           "MEDIA_SIGNING_KEY": "signing-secret", "JWT_PRIVATE_KEY_FILE": "/secrets/jwt.pem"}

# `export` of the child, replaced: reports what it found as its "error" (the one text the parent
# passes on), or (mode "link") writes a SavedModel that is a link to the signing key.
PROBE = textwrap.dedent("""
    import json, os, socket, sys
    from model_service import exporter

    def probe(source, fmt, model_type, mode, dynamic_size, output, work, max_unzipped_bytes):
        if {mode!r} == "hang":
            import time
            time.sleep(3600)
        if {mode!r} == "link":
            os.symlink({secret!r}, output)
            return {{"input_shape": [32, 32, 3], "output_size": 2}}
        found = {{}}
        def attempt(name, action):
            try:
                found[name] = action()
            except Exception as exc:
                found[name] = type(exc).__name__
        attempt("secret", lambda: open({secret!r}).read())
        attempt("repository", lambda: os.listdir({repository!r}))
        attempt("service_environ", lambda: len(open("/proc/{service_pid}/environ", "rb").read()))
        attempt("network", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2) and "connected")
        attempt("source", lambda: open(source, "rb").read().decode())
        attempt("source_written", lambda: open(source, "ab").write(b"x"))
        found["env"] = sorted(os.environ)
        found["secrets_in_env"] = [v for v in os.environ.values() if "hunter2" in v or "signing-secret" in v]
        found["uid"] = os.getuid()
        found["pid"] = os.getpid()
        raise exporter.Unusable("found " + json.dumps(found))

    exporter.export = probe
    sys.exit(exporter.main())
""")


class Stack:
    """What the stack keeps on disk next to a conversion's workspace, and a service listening."""

    def __init__(self, tmp_path: Path, monkeypatch):
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)  # the service's own environment
        self.data = tmp_path / "data"
        (self.data / "secrets").mkdir(parents=True)
        self.secret = self.data / "secrets" / "jwt-private.pem"
        self.secret.write_text("-----BEGIN PRIVATE KEY-----")
        os.chmod(self.secret, 0o644)  # readable by anyone on the host: only the confinement keeps it out
        self.repository = self.data / "tfserving-models"
        (self.repository / "m1" / "1").mkdir(parents=True)
        self.workspace = self.repository / ".staging" / "upload-1"
        self.workspace.mkdir(parents=True)
        self.model = self.workspace / "model.h5"
        self.model.write_text("weights")
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()

    def python(self, tmp_path: Path, mode: str = "report") -> str:
        """A `python` that runs the probe (readable inside bwrap: it sits next to the probe)."""
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        probe = bin_dir / "probe.py"
        probe.write_text(PROBE.format(mode=mode, secret=str(self.secret), repository=str(self.repository),
                                      service_pid=os.getpid(), port=self.listener.getsockname()[1]))
        wrapper = bin_dir / "python"
        # called as `python [options] -m model_service.exporter ARGS`: runs the probe with ARGS
        wrapper.write_text('#!/bin/sh\nwhile [ "$1" != model_service.exporter ]; do shift; done\nshift\n'
                           f'exec {sys.executable} -s {probe} "$@"\n')
        for path in (bin_dir, probe, wrapper):
            os.chmod(path, 0o755)
        return str(wrapper)

    def convert(self, converter: SubprocessConverter) -> dict:
        with self.listener, pytest.raises(errors.Unprocessable) as caught:
            converter.convert(self.model, uploads.H5, "Classification", "raw", self.workspace)
        message = caught.value.message
        assert message.startswith("found "), message
        return json.loads(message.removeprefix("found "))


@pytest.fixture
def stack(tmp_path, monkeypatch):
    os.chmod(tmp_path, 0o755)  # the probe's python is reached through it
    return Stack(tmp_path, monkeypatch)


def refusing_bwrap(tmp_path: Path) -> str:
    path = tmp_path / "refusing-bwrap"
    path.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace.' >&2\nexit 1\n")
    path.chmod(0o755)
    return str(path)


def test_the_converter_child_reaches_no_secret_no_network_and_not_the_service(tmp_path, stack):
    found = stack.convert(SubprocessConverter(timeout_s=120, python=stack.python(tmp_path)))
    assert found["secret"] == "FileNotFoundError"  # the signing key, though readable by anyone on the host
    assert found["repository"] == "FileNotFoundError"  # other models, the staging area
    assert found["service_environ"] == "FileNotFoundError"  # a PID namespace: the service is not there
    assert found["network"] in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert found["env"] and found["secrets_in_env"] == [] and not set(found["env"]) & set(SECRETS)
    assert found["source"] == "weights" and found["source_written"] in ("OSError", "PermissionError")
    assert found["pid"] <= 2
    if os.getuid() == 0:
        assert found["uid"] == 65534  # nobody: root is given up before the file is read
    assert stack.model.read_text() == "weights"


def test_where_bwrap_is_refused_the_conversion_runs_unconfined_with_a_warning(tmp_path, stack, caplog):
    """The fallback (docker compose, Kubernetes without namespaces): a clean environment only. As
    root here the child keeps root (MODEL_EXPORT_USER empty): this Python is not reachable by nobody."""
    confinement = ExportConfinement(bwrap=refusing_bwrap(tmp_path), user=None)
    with caplog.at_level(logging.WARNING, logger="model_service.conversion"):
        found = stack.convert(SubprocessConverter(timeout_s=120, python=stack.python(tmp_path), confinement=confinement))
    assert found["env"] and found["secrets_in_env"] == [] and not set(found["env"]) & set(SECRETS)
    assert found["secret"] == "-----BEGIN PRIVATE KEY-----"  # what confinement is for
    assert any("WITHOUT bubblewrap (No permissions to create new namespace.)" in r.getMessage() for r in caplog.records)


def test_where_isolation_is_required_and_bwrap_is_refused_nothing_is_converted(tmp_path, stack):
    confinement = ExportConfinement(bwrap=refusing_bwrap(tmp_path), require_isolation=True)
    converter = SubprocessConverter(timeout_s=120, python=stack.python(tmp_path), confinement=confinement)
    with pytest.raises(errors.Unavailable) as caught:
        converter.convert(stack.model, uploads.H5, "Classification", "raw", stack.workspace)
    message = caught.value.message
    assert "No permissions to create new namespace" in message and "MODEL_EXPORT_REQUIRE_ISOLATION=false" in message
    assert str(tmp_path) not in message
    assert not (stack.workspace / "export").exists()


def test_a_saved_model_the_child_made_a_link_is_refused(tmp_path, stack):
    """What the child wrote is not trusted: here its SavedModel is a link to the signing key."""
    converter = SubprocessConverter(timeout_s=120, python=stack.python(tmp_path, mode="link"),
                                    confinement=ExportConfinement(bwrap=refusing_bwrap(tmp_path), user=None))
    with pytest.raises(errors.Unprocessable, match="holds links or special files"):
        converter.convert(stack.model, uploads.H5, "Classification", "raw", stack.workspace)


def _processes_running(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_conversion_past_its_time_limit_is_stopped_with_everything_it_started(tmp_path, stack):
    python = stack.python(tmp_path, mode="hang")
    probe = str(Path(python).parent / "probe.py")
    with pytest.raises(errors.Unprocessable, match="converting the model took longer than 3 s"):
        SubprocessConverter(timeout_s=3, python=python).convert(stack.model, uploads.H5, "Classification", "raw", stack.workspace)
    give_up = time.monotonic() + 30
    while _processes_running(probe) and time.monotonic() < give_up:
        time.sleep(0.1)  # the sandbox's processes get SIGKILL as bwrap dies; reaping takes a moment
    assert _processes_running(probe) == []
