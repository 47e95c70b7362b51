"""Shared fixtures of the common library's tests."""
from deploy.s3.fixtures import register_marker, s3_server  # noqa: F401  (session-scoped throwaway radosgw)


def pytest_configure(config):
    register_marker(config)  # `s3`: tests against the real radosgw (the root config has --strict-markers)
