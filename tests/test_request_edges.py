"""Requests at the edges of what the API accepts, through the gateway of the real stack: every
route of API.md with ids, limits and offsets it cannot use (out of int64 range, not numbers),
paths with escaped slashes or NULs, unsatisfiable ranges, tokens without an expiry, and the
folders a project's deletion leaves in object storage. Each answers a JSON error with a message
(never a 500), or succeeds and leaves nothing behind."""
from __future__ import annotations

import io
import time
import uuid

import jwt
import pytest
from PIL import Image
from waiting import eventually

pytestmark = pytest.mark.integration

MAX_ID = 2**63 - 1
RANGE = "between 1 and 9223372036854775807"
# Numbers that cannot be ids: the path converter refuses them (404), parameters say why (400).
OUT_OF_RANGE = ["0", str(2**63), str(2**64), str(10**30)]
NOT_NUMBERS = ["-1", "abc", "1.5", " 1"]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


class Caller:
    """A registered user with a Classification project and a token-carrying session."""

    def __init__(self, stack, api, register):
        self.user_id, self.token = register(stack, f"edges-{uuid.uuid4().hex[:8]}")
        self.session = api(stack, self.token)
        created = self.session.post("/projects/all", params={"user_id": self.user_id}, json={"title": "edges", "type": "Classification"})
        assert created.status_code == 201, created.text
        self.project_id = created.json()["id"]


@pytest.fixture(scope="module")
def caller(stack_factory, api, register):
    return Caller(stack_factory(AUTH_REQUIRED="true"), api, register)


# Every route of API.md (and the additions the services serve) that takes an id in its path:
# (method, path with {} for the id, extra request arguments).
PATH_ID_ROUTES = [
    ("GET", "/projects/{}", {}),
    ("PUT", "/projects/{}", {"params": {"description": "x"}}),
    ("DELETE", "/projects/{}", {}),
    ("GET", "/videos/{}", {}),
    ("DELETE", "/videos/{}", {}),
    ("GET", "/videos/{}/file", {"params": {"expires": "1", "signature": "x"}}),
    ("GET", "/models/{}", {}),
    ("DELETE", "/models/{}", {}),
    ("GET", "/models/{}/logs", {}),
    ("POST", "/models/{}/cancel", {}),
    ("GET", "/models/{}/file", {"params": {"expires": "1", "signature": "x"}}),
    ("GET", "/images/byVideo/{}", {}),
    ("GET", "/images/{}", {}),
    ("PUT", "/images/{}", {"params": {"type": "cat"}}),
    ("DELETE", "/images/{}", {}),
    ("GET", "/images/{}/file", {"params": {"expires": "1", "signature": "x"}}),
]
# `/images/<x>` with x not made of digits is a tag, not an id (API.md: `/images/Cat`).
TAG_ROUTES = {"/images/{}"}


def assert_json_error(response, status: int | tuple[int, ...]):
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.request.method, response.request.url, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    body = response.json()
    assert body["message"] and body["code"], body
    return body


@pytest.mark.parametrize("method,template,kwargs", PATH_ID_ROUTES, ids=[f"{m} {t}" for m, t, _ in PATH_ID_ROUTES])
def test_path_ids_that_cannot_be_ids_are_json_404(caller, method, template, kwargs):
    for raw in OUT_OF_RANGE:
        body = assert_json_error(caller.session.request(method, template.format(raw), **kwargs), 404)
        assert body["code"] == "not_found"
    if template not in TAG_ROUTES:
        for raw in NOT_NUMBERS:
            assert_json_error(caller.session.request(method, template.format(raw), **kwargs), 404)
    # the largest id is a well-formed id of nothing: an ordinary 404 from the service (through
    # gRPC and MongoDB, which carry int64), never a crash; a signed file URL's signature is
    # checked first (403)
    expected = (403, 404) if template.endswith("/file") else 404
    assert_json_error(caller.session.request(method, template.format(MAX_ID), **kwargs), expected)


# Every route with ids or paging in its query string or form: (method, path, the parameters
# under test, whether each is required, extra request arguments).
def query_routes(caller: Caller) -> list[tuple[str, str, dict, dict]]:
    scope = {"user_id": caller.user_id, "project_id": caller.project_id}
    paged = {**scope, "limit": 5, "offset": 0}
    return [
        ("GET", "/projects/all", {"user_id": caller.user_id}, {}),
        ("POST", "/projects/all", {"user_id": caller.user_id}, {"json": {"title": "never", "type": "Classification"}}),
        ("PUT", f"/projects/{caller.project_id}", {"user_id": caller.user_id, "description": "d"}, {}),
        ("GET", "/videos/all", scope, {}),
        ("POST", "/videos/all", scope, {"files": {"file": ("v.mp4", b"not a video")}, "data": {"model_id": "1"}}),
        ("GET", "/models/all", scope, {}),
        ("POST", "/models/all", {**scope, "method": "upload"}, {"files": {"title": (None, "m")}}),
        ("GET", "/images/all", paged, {}),
        ("DELETE", "/images/all", scope, {}),
        ("GET", "/images/cat", paged, {}),
        ("POST", "/images/cat", scope, {"files": {"files": ("a.txt", b"not an image")}}),
        ("PUT", "/images/cat", {**paged, "type": "dog"}, {}),
        ("DELETE", "/images/cat", scope, {}),
        ("GET", "/images/byVideo", {"video_id": 1, "limit": 5, "offset": 0}, {}),
        ("POST", "/images/predict", {**scope, "model_id": 1}, {"files": {"files": ("a.txt", b"x")}}),
        ("GET", "/images/type", scope, {}),
        ("GET", "/images/1", {"project_id": caller.project_id}, {}),
    ]


OPTIONAL = {"limit", "offset", "user_id"}  # user_id: with a token the caller is known without it


def test_query_ids_limit_and_offset_that_cannot_be_used_are_json_400(caller):
    checked = 0
    for method, path, params, kwargs in query_routes(caller):
        for name in [name for name in params if name in {"user_id", "project_id", "model_id", "video_id", "limit", "offset"}]:
            values = OUT_OF_RANGE + NOT_NUMBERS + ([] if name in OPTIONAL else [""])
            if name == "offset":
                values = [value for value in values if value != "0"]  # skipping nothing is fine
            if name == "project_id" and path == "/images/1":
                values = [value for value in values if value != ""]  # optional there
            for raw in values:
                response = caller.session.request(method, path, params={**params, name: raw}, **kwargs)
                body = assert_json_error(response, 400)
                assert name in body["message"], (method, path, name, raw, body)
                if raw:
                    minimum = 0 if name == "offset" else 1
                    assert f"{name} must be an integer between {minimum} and {MAX_ID}" == body["message"], body
                checked += 1
    assert checked > 300


def test_ids_and_paging_at_the_top_of_the_range_are_ordinary_answers(caller):
    session, scope = caller.session, {"user_id": caller.user_id, "project_id": caller.project_id}
    huge_page = {**scope, "limit": MAX_ID, "offset": MAX_ID}
    assert session.get("/images/all", params=huge_page).json() == []
    assert session.get("/images/cat", params=huge_page).json() == []
    assert_json_error(session.get("/images/all", params={**scope, "project_id": MAX_ID}), 404)
    assert_json_error(session.get("/videos/all", params={**scope, "project_id": MAX_ID}), 404)
    assert_json_error(session.get("/models/all", params={**scope, "project_id": MAX_ID}), 404)
    assert_json_error(session.get("/projects/all", params={"user_id": MAX_ID}), 403)
    assert_json_error(session.get("/images/byVideo", params={"video_id": MAX_ID}), 404)


# --- paths the gateway refuses -----------------------------------------------------------------

@pytest.mark.parametrize("path", ["/projects/1%2F2", "/projects/1%2f2", "/images/%00", "/images/a%00b", "/projects/1%5C2", "/videos/%2F"])
def test_escaped_slash_or_nul_in_a_path_is_a_json_400_with_a_message(stack, api, path):
    body = assert_json_error(api(stack).get(path), 400)
    assert body["code"] == "bad_path" and "escaped slash" in body["message"]


# --- tokens --------------------------------------------------------------------------------------

def signed_with_the_real_key(stack, api, claims: dict) -> str:
    pem = (stack.data_dir / "secrets" / "jwt-signing-key.pem").read_bytes()
    kid = api(stack).get("/users/.well-known/jwks.json").json()["keys"][0]["kid"]
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})


def test_a_token_without_expiry_is_refused(stack, api, caller):
    now = int(time.time())
    claims = {"iss": "mlstudio", "sub": str(caller.user_id), "iat": now}
    forever = signed_with_the_real_key(stack, api, claims)
    body = assert_json_error(api(stack, forever).get("/projects/all", params={"user_id": caller.user_id}), 401)
    assert body["code"] == "unauthenticated"
    # the same claims with an expiry pass: the refusal is for the missing exp, not the key
    expiring = signed_with_the_real_key(stack, api, {**claims, "exp": now + 600})
    assert api(stack, expiring).get("/projects/all", params={"user_id": caller.user_id}).status_code == 200


def test_an_expired_token_is_refused_beyond_the_clock_skew(stack, api, caller):
    now = int(time.time())
    expired = signed_with_the_real_key(stack, api, {"iss": "mlstudio", "sub": str(caller.user_id), "iat": now - 7200, "exp": now - 120})
    assert_json_error(api(stack, expired).get("/projects/all", params={"user_id": caller.user_id}), 401)


# --- media ranges ----------------------------------------------------------------------------------

def test_unsatisfiable_ranges_of_a_stored_image_are_json_416(stack, api, caller):
    uploaded = caller.session.post("/images/cat", params={"user_id": caller.user_id, "project_id": caller.project_id},
                                   files=[("files", ("a.png", png()))])
    assert uploaded.status_code == 201, uploaded.text
    url = uploaded.json()[0]["url"]
    size = len(api(stack).get(url).content)
    for header in ("bytes=-0", f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=" + "9" * 400 + "-"):
        response = api(stack).get(url, headers={"Range": header})
        body = assert_json_error(response, 416)
        assert response.headers["Content-Range"] == f"bytes */{size}", header
        assert body["code"] == "range_not_satisfiable" and f"{size} bytes" in body["message"]


# --- storage after deletes -------------------------------------------------------------------------

def test_deleting_a_project_leaves_no_empty_folders_in_storage(stack, api, register):
    owner = Caller(stack, api, register)
    uploaded = owner.session.post("/images/cat", params={"user_id": owner.user_id, "project_id": owner.project_id},
                                  files=[("files", ("a.png", png()))])
    assert uploaded.status_code == 201, uploaded.text
    folder = stack.data_dir / "objects" / "images" / str(owner.project_id)
    assert folder.is_dir()
    assert owner.session.delete(f"/projects/{owner.project_id}").json() == {"message": "success"}
    eventually(lambda: not folder.exists(), "the project's folder removed with its images")  # in the background
    assert (stack.data_dir / "objects").is_dir()
