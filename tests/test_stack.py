"""The local stack through its gateway: health, Envoy's own JSON answers, authentication,
CORS, body limits, and the launcher's start, stop and failure behaviour."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from deploy.local.processes import pid_alive, port_is_free

pytestmark = pytest.mark.integration

FRONTEND = "http://localhost:3000"


def forged_token(kid: str, user_id: int) -> str:
    """A well-formed RS256 token with the real key id, signed by another key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    now = int(time.time())
    claims = {"iss": "mlstudio", "sub": str(user_id), "iat": now, "exp": now + 600}
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})


def raw_post(url_port: int, path: str, content_length: int) -> tuple[int, dict]:
    """Announces a body of `content_length` bytes without sending it; the gateway must answer
    from the headers alone. Returns (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", url_port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def assert_envoy_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert body["message"]
    return body


# --- the gateway -------------------------------------------------------------------------------

def test_gateway_health_and_request_id(stack, api):
    response = api(stack).get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers.get("x-request-id")


def test_unknown_path_is_a_json_404(stack, api, register):
    _, token = register(stack, "stack-404")
    body = assert_envoy_error(api(stack, token).get("/no/such/thing"), 404, "not_found")
    assert "/no/such/thing" in body["message"]


def test_missing_token_is_a_json_401(stack, api):
    body = assert_envoy_error(api(stack).get("/projects/all", params={"user_id": 1}), 401, "unauthenticated")
    assert "missing" in body["message"].lower()


def test_forged_token_is_refused(stack, api, register):
    user_id, _ = register(stack, "stack-forged")
    kid = api(stack).get("/users/.well-known/jwks.json").json()["keys"][0]["kid"]
    session = api(stack, forged_token(kid, user_id))
    assert_envoy_error(session.get("/projects/all", params={"user_id": user_id}), 401, "unauthenticated")


def test_valid_token_in_both_schemes_reaches_the_service(stack, api, register):
    user_id, token = register(stack, "stack-valid")
    for scheme in ("Bearer", "Token"):
        response = api(stack).get("/projects/all", params={"user_id": user_id}, headers={"Authorization": f"{scheme} {token}"})
        assert response.status_code == 200, (scheme, response.text)
        assert isinstance(response.json(), list)


def test_client_supplied_payload_header_does_not_authenticate(stack, api):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "1", "iss": "mlstudio"}).encode()).decode().rstrip("=")
    response = api(stack).get("/projects/all", params={"user_id": 1}, headers={"x-jwt-payload": payload})
    assert_envoy_error(response, 401, "unauthenticated")


def test_open_paths_need_no_token(stack, api):
    session = api(stack)
    assert session.get("/users/.well-known/jwks.json").status_code == 200
    docs = session.get("/docs/users/")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert session.get("/docs/projects/swagger.json").status_code == 200
    assert session.get("/swaggerui/swagger-ui.css").status_code == 200


def test_cors_preflight_from_the_frontend(stack, api):
    response = api(stack).options(
        "/projects/all",
        headers={"Origin": FRONTEND, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"]


def test_gateway_errors_carry_cors_headers(stack, api):
    """A browser must be able to read the 401 to know it should log in."""
    response = api(stack).get("/projects/all", headers={"Origin": FRONTEND})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == FRONTEND


def test_body_over_the_limit_is_refused_before_it_is_sent(stack):
    status, body = raw_post(stack.ports["GATEWAY_PORT"], "/users/auth/", 2 * 1024 * 1024)
    assert status == 413
    assert body["code"] == "too_large"
    assert "1048576" in body["message"]


# --- legacy mode (AUTH_REQUIRED=false) -----------------------------------------------------------

def test_legacy_mode_lets_requests_without_token_through(legacy_stack, api, register):
    user_id, _ = register(legacy_stack, "legacy-user")
    response = api(legacy_stack).get("/projects/all", params={"user_id": user_id})
    assert response.status_code == 200, response.text


def test_legacy_mode_still_verifies_a_present_token(legacy_stack, api, register):
    user_id, _ = register(legacy_stack, "legacy-forged")
    kid = api(legacy_stack).get("/users/.well-known/jwks.json").json()["keys"][0]["kid"]
    response = api(legacy_stack, forged_token(kid, user_id)).get("/projects/all", params={"user_id": user_id})
    assert_envoy_error(response, 401, "unauthenticated")


def test_legacy_mode_drops_a_client_supplied_payload_header(legacy_stack, api, register):
    """Were the header passed on, the service would see user 999999 and refuse user_id (403)."""
    user_id, _ = register(legacy_stack, "legacy-spoof")
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "999999"}).encode()).decode().rstrip("=")
    response = api(legacy_stack).get("/projects/all", params={"user_id": user_id}, headers={"x-jwt-payload": payload})
    assert response.status_code == 200, response.text


# --- the launcher ----------------------------------------------------------------------------
# These need no model service, so their stacks run only what the gateway needs (faster).
CORE = {"MLSTUDIO_ONLY": "user,project"}


def test_busy_port_fails_fast_with_a_clear_message(private_stack):
    stack = private_stack(**CORE)
    port = stack.ports["GATEWAY_PORT"]
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        result = stack.launcher("run", timeout=60)
    assert result.returncode != 0
    assert f"port {port} (gateway) is already in use; set GATEWAY_PORT to another port" in result.stderr
    assert not (stack.data_dir / "mongo").exists()  # nothing was started


def test_up_down_leave_nothing_behind_and_data_persists(private_stack, api, register):
    stack = private_stack(**CORE)
    started = stack.launcher("up")
    assert started.returncode == 0, started.stdout + started.stderr
    assert stack.url in started.stdout
    state = stack.state()
    pids = [state["pid"], *state["processes"].values()]
    assert set(state["processes"]) >= {"mongodb", "user", "project", "gateway"}
    user_id, token = register(stack, "persistent")
    assert stack.launcher("up").returncode == 0  # already running: fine
    status = stack.launcher("status")
    assert status.returncode == 0 and "gateway" in status.stdout

    stopped = stack.launcher("down", timeout=90)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert all(port_is_free(port) for port in stack.ports.values())
    again = stack.launcher("down", timeout=90)
    assert again.returncode == 0 and "not running" in again.stdout

    assert stack.launcher("up").returncode == 0
    assert register(stack, "persistent")[0] == user_id
    # the signing key persisted too: a token from before the restart still works
    assert api(stack, token).get("/projects/all", params={"user_id": user_id}).status_code == 200
    pids = [stack.state()["pid"], *stack.state()["processes"].values()]
    assert stack.launcher("down", timeout=90).returncode == 0
    assert [pid for pid in pids if pid_alive(pid)] == []


def wait_for(condition, what: str, timeout_s: float = 180.0):
    """Polls `condition` until it returns something true; the bound guards against a hang."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s:g} s")


def test_a_crashed_service_is_restarted_and_the_rest_keep_running(private_stack, api, register):
    stack = private_stack(**CORE).start()
    before = stack.state()["processes"]
    os.kill(before["project"], signal.SIGKILL)

    def restarted():
        assert stack.running, f"the stack stopped:\n{stack.log_tail()}"
        now = (stack.state() or {}).get("processes", {})
        return now if now.get("project") not in (None, before["project"]) else None

    after = wait_for(restarted, "the project service's restart")
    assert stack.running, stack.log_tail()
    assert {name: pid for name, pid in after.items() if name != "project"} == {name: pid for name, pid in before.items() if name != "project"}
    assert all(pid_alive(pid) for pid in after.values())
    user_id, token = register(stack, "after-restart")
    wait_for(lambda: api(stack, token).get("/projects/all", params={"user_id": user_id}).status_code == 200,
             "the restarted project service answering through the gateway")
    assert f"project (pid {before['project']}) exited with code -9" in stack.log_tail(200)

    stack.process.send_signal(signal.SIGINT)  # Ctrl-C still stops everything
    assert stack.process.wait(90) == 0
    assert [name for name, pid in after.items() if pid_alive(pid)] == []
