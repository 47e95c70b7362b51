"""The client and the command line without the stack: errors become exceptions and exit codes
carrying the API's message and code, the saved profile keeps the token to its owner and never
shows it, and a folder upload goes in batches with progress. A small HTTP server in a thread
plays the API."""
from __future__ import annotations

import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from mlstudio_client import ApiError, Client, NotFound, Unauthorized, config
from mlstudio_client.cli import cli
from mlstudio_client.client import user_id_of

# a JWT whose payload is {"sub": "7"} (the client reads the user id without verifying)
TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiI3In0.c2lnbmF0dXJl"


class FakeApi(BaseHTTPRequestHandler):
    """Answers like the gateway for the few routes the tests call; records what it was sent."""

    seen: list[tuple[str, str, dict, bytes]] = []

    def _answer(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        FakeApi.seen.append((self.command, self.path, dict(self.headers), body))
        path = self.path.split("?")[0]
        if path == "/users/auth/":
            return self._answer(200, {"token": TOKEN, "user_id": 7, "username": "ann"})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(401, {"message": "a token is required", "code": "unauthorized"})
        if path == "/projects/404":
            return self._answer(404, {"message": "project 404 not found", "code": "not_found"})
        if path == "/projects/502":
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if path.startswith("/images/"):
            return self._answer(201, [{"id": i, "type": "cat"} for i in range(body.count(b'name="files"'))])
        return self._answer(200, [{"id": 1, "title": "Bottles"}])

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args):  # quiet: pytest shows failures
        pass


@pytest.fixture
def api_url():
    FakeApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("MLSTUDIO_URL", "MLSTUDIO_TOKEN", "MLSTUDIO_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_an_error_answer_raises_with_the_apis_message_and_code(api_url):
    client = Client(api_url, TOKEN)
    with pytest.raises(NotFound) as raised:
        client.get_project(404)
    assert (raised.value.status, raised.value.code, raised.value.message) == (404, "not_found", "project 404 not found")
    with pytest.raises(Unauthorized):
        Client(api_url).get_project(1)
    with pytest.raises(ApiError) as raised:  # not the API's JSON: a sentence naming the status still
        client.get_project(502)
    assert raised.value.status == 502 and raised.value.code == "http_502" and "502" in raised.value.message


def test_the_user_id_is_read_from_the_token_and_sent_as_the_api_wants(api_url):
    assert user_id_of(TOKEN) == 7 and user_id_of("not-a-jwt") is None
    Client(api_url, TOKEN).list_projects()
    method, path, headers, _ = FakeApi.seen[-1]
    assert (method, path) == ("GET", "/projects/all?user_id=7") and headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_folder_uploads_its_images_in_batches_with_progress(api_url, tmp_path):
    folder = tmp_path / "cats"
    folder.mkdir()
    for i in range(5):
        (folder / f"cat{i}.png").write_bytes(b"png")
    (folder / "notes.txt").write_text("not an image")
    seen = []
    made = Client(api_url, TOKEN).upload_images(3, "cat", folder, batch_size=2, on_progress=lambda done, total: seen.append((done, total)))
    assert len(made) == 5 and seen == [(2, 5), (4, 5), (5, 5)]
    posts = [entry for entry in FakeApi.seen if entry[0] == "POST"]
    assert [p[1] for p in posts] == ["/images/cat?user_id=7&project_id=3"] * 3
    assert b"notes.txt" not in b"".join(p[3] for p in posts)


def test_the_cli_shows_the_apis_error_and_exits_non_zero(api_url, home):
    runner = CliRunner()
    result = runner.invoke(cli, ["--url", api_url, "projects", "show", "404"], env={"MLSTUDIO_TOKEN": TOKEN})
    assert result.exit_code == 1
    assert "project 404 not found (not_found)" in result.stderr and result.stdout == ""
    expired = TOKEN.replace("c2lnbmF0dXJl", "b3RoZXI")  # the same user, a signature the API refuses
    result = runner.invoke(cli, ["--url", api_url, "projects"], env={"MLSTUDIO_TOKEN": expired})
    assert result.exit_code == 1 and "a token is required (unauthorized)" in result.stderr and "mlstudio login" in result.stderr
    result = runner.invoke(cli, ["--url", api_url, "projects"])
    assert result.exit_code == 1 and "not logged in" in result.stderr and "mlstudio login" in result.stderr


def test_login_keeps_the_token_for_its_owner_only_and_never_prints_it(api_url, home):
    runner = CliRunner()
    result = runner.invoke(cli, ["--url", api_url, "login", "--username", "ann"], input="s3cret\n")
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output and "ann" in result.stderr
    path = home / "config" / "mlstudio" / "config.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == TOKEN
    assert TOKEN not in repr(config.load())

    listed = runner.invoke(cli, ["projects"])  # the saved URL and token
    assert listed.exit_code == 0 and json.loads(listed.stdout) == [{"id": 1, "title": "Bottles"}]
    whoami = runner.invoke(cli, ["whoami"])
    assert json.loads(whoami.stdout)["user_id"] == 7 and TOKEN not in whoami.output

    assert runner.invoke(cli, ["logout"]).exit_code == 0
    assert "token" not in path.read_text() or json.loads(path.read_text())["token"] is None
    assert runner.invoke(cli, ["projects"]).exit_code == 1


def test_the_environment_overrides_the_saved_profile(home, monkeypatch):
    config.save(config.Profile(url="http://saved:8000", token="saved-token", user_id=3, username="ann"))
    monkeypatch.setenv("MLSTUDIO_URL", "http://other:9000")
    monkeypatch.setenv("MLSTUDIO_TOKEN", TOKEN)
    profile = config.load()
    assert (profile.url, profile.token, profile.user_id) == ("http://other:9000", TOKEN, None)


def test_a_bad_training_parameter_is_a_usage_error(home):
    result = CliRunner().invoke(cli, ["models", "train", "--project", "1", "--title", "t", "--param", "epochs"])
    assert result.exit_code == 2 and "NAME=VALUE" in result.stderr


def test_review_commands_send_the_labels_as_one_json_update(api_url, home):
    runner = CliRunner()
    env = {"MLSTUDIO_TOKEN": TOKEN}
    boxes = runner.invoke(cli, ["--url", api_url, "images", "boxes", "5", "--box", "bottle", "10", "5", "40", "30",
                                "--box", "can", "0", "0", "64", "48"], env=env)
    assert boxes.exit_code == 0, boxes.output
    method, path, _, body = FakeApi.seen[-1]
    assert (method, path) == ("PUT", "/images/5") and json.loads(body) == {
        "detections": [{"label": "bottle", "box": [10.0, 5.0, 40.0, 30.0]}, {"label": "can", "box": [0.0, 0.0, 64.0, 48.0]}]}
    assert runner.invoke(cli, ["--url", api_url, "images", "confirm", "5", "6", "--uncheck"], env=env).exit_code == 0
    assert [(p, json.loads(b)) for _, p, _, b in FakeApi.seen[-2:]] == [("/images/5", {"checked": False}), ("/images/6", {"checked": False})]
    sent = len(FakeApi.seen)
    neither = runner.invoke(cli, ["--url", api_url, "images", "boxes", "5"], env=env)  # nothing asked: nothing sent
    assert neither.exit_code == 2 and "--clear" in neither.stderr and len(FakeApi.seen) == sent
    with pytest.raises(ValueError, match="nothing to change"):
        Client(api_url, TOKEN).update_project(3)
    assert len(FakeApi.seen) == sent
