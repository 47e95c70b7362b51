"""Fixtures of the cross-service tests: the whole local stack, run by the real launcher
(`python -m deploy.local.launcher run`) on free random ports with a temporary data directory,
so several test runs can share a machine, and helpers to call it through the gateway.

    pytestmark = pytest.mark.integration

    def test_projects(stack, api, register):
        user_id, token = register(stack, "alice")
        response = api(stack, token).get("/projects/all", params={"user_id": user_id})

- `stack`: AUTH_REQUIRED=true, started once per session (restarted if a test stopped it).
- `legacy_stack`: AUTH_REQUIRED=false, started on first use.
- `stack_factory(**env)`: a session stack with other settings (each start costs seconds).
- `private_stack(**env)`: a fresh, unstarted `Stack` (own ports and data) for tests that
  start, stop or break it; stopped after the test. `MLSTUDIO_ONLY="user,project"` runs only
  those services (plus MongoDB and Envoy), which starts faster.
- `api(stack, token=None)`: a requests session on the gateway's URL.
- `register(stack, username)`: registers (or logs in) a user, returns (user_id, token).

Tests that use these fixtures are marked `integration` automatically.
"""
from __future__ import annotations

import pytest

from deploy.local.managed_stack import Api, Stack
from deploy.s3.fixtures import s3_server  # noqa: F401  (session-scoped throwaway radosgw, for tests/test_s3_stack.py)

STACK_FIXTURES = {"stack", "legacy_stack", "stack_factory", "private_stack"}


def pytest_collection_modifyitems(items):
    for item in items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack_factory(tmp_path_factory):
    """`stack_factory(**env)`: the session's stack with these launcher settings, started once."""
    stacks: dict[tuple, Stack] = {}

    def get(**env: str) -> Stack:
        key = tuple(sorted(env.items()))
        if key not in stacks:
            stacks[key] = Stack(tmp_path_factory.mktemp("stack"), **env)
        return stacks[key].start()

    yield get
    for stack in stacks.values():
        stack.stop()


@pytest.fixture
def stack(stack_factory) -> Stack:
    """The stack with authentication on (the default), running."""
    return stack_factory(AUTH_REQUIRED="true")


@pytest.fixture
def legacy_stack(stack_factory) -> Stack:
    """The stack with AUTH_REQUIRED=false (the legacy mode), running."""
    return stack_factory(AUTH_REQUIRED="false")


@pytest.fixture
def private_stack(tmp_path_factory):
    """`private_stack(**env)`: a new, unstarted Stack of the test's own; stopped afterwards,
    whether it was started with `.start()` or `.launcher("up")`."""
    made: list[Stack] = []

    def make(**env: str) -> Stack:
        made.append(Stack(tmp_path_factory.mktemp("private-stack"), **env))
        return made[-1]

    yield make
    for stack in made:
        stack.stop()
        if (stack.data_dir / "stack.pid").exists():
            stack.launcher("down", timeout=90)


@pytest.fixture(scope="session")
def api():
    """`api(stack, token=None)`: a requests session on the stack's gateway."""
    sessions: list[Api] = []

    def make(stack: Stack, token: str | None = None) -> Api:
        sessions.append(Api(stack.url, token))
        return sessions[-1]

    yield make
    for session in sessions:
        session.close()


@pytest.fixture(scope="session")
def register(api):
    """`register(stack, username, password=...)`: registers the user (or logs in, if the name is
    taken with this password) and returns (user_id, token)."""

    def do(stack: Stack, username: str, password: str = "correct horse battery staple", email: str | None = None) -> tuple[int, str]:
        session = api(stack)
        created = session.post("/users/", json={"username": username, "password": password, "email": email or f"{username}@example.com"})
        assert created.status_code in (200, 201, 409), created.text
        login = session.post("/users/auth/", json={"username": username, "password": password})
        assert login.status_code == 200, login.text
        body = login.json()
        return int(body["user_id"]), body["token"]

    return do
