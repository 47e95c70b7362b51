"""pytest fixtures around deploy/s3/radosgw.py, for any conftest to import:

    from deploy.s3.fixtures import register_marker, s3_server  # noqa: F401  (session-scoped S3Server)

    def pytest_configure(config):
        register_marker(config)  # the `s3` marker (the root config runs with --strict-markers)

`s3_server` starts one throwaway Ceph + radosgw per test session (about 1-2 s) and tears it down
after the last test. When Ceph cannot be installed or started, every test that uses it is
SKIPPED with the full reason, unless MLSTUDIO_REQUIRE_S3=1, where it FAILS instead (set it in CI,
where the S3 tests must really run).
"""
from __future__ import annotations

import os
import sys
import tempfile

import pytest

from . import radosgw

REQUIRE_ENV = "MLSTUDIO_REQUIRE_S3"
MARKER = "s3: runs against a real S3 server (a throwaway Ceph radosgw from deploy/s3/radosgw.py)"


def register_marker(config) -> None:
    """Registers the `s3` marker; call it from a conftest's pytest_configure."""
    config.addinivalue_line("markers", MARKER)


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def s3_server():
    """A running radosgw: S3Server(url, endpoint, access_key, secret_key, bucket)."""
    # Short path under /tmp: Ceph's unix sockets must fit in 107 characters.
    workdir = tempfile.mkdtemp(prefix="mlstudio-rgw-")
    try:
        server = radosgw.start(workdir, tie_to_parent=True)
    except radosgw.Unavailable as exc:
        radosgw.stop(workdir, purge=True)
        message = f"S3 (radosgw) tests cannot run here: {exc}"
        print(f"\n*** {message}\n", file=sys.stderr)
        if _required():
            pytest.fail(f"{REQUIRE_ENV} is set: {message}", pytrace=False)
        pytest.skip(message)
    print(f"\nradosgw up at {server.endpoint} in {server.start_seconds}s {server.phases}", file=sys.stderr)
    try:
        yield server
    finally:
        radosgw.stop(workdir, purge=True)
