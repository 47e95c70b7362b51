"""The gateway config: every rendering is valid for the real Envoy, the body-limit regex means
"greater than N", and the security-relevant parts (open paths, header removal, filter order)
are where they must be."""
from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway import render as gw

ENVS = ("local", "compose", "kubernetes")
ENVOY = Path(sys.executable).parent / "envoy"


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENVOY), "--mode", "validate", "--config-path", str(path)], capture_output=True, text=True, timeout=120, check=False)


def http_filters(config: dict) -> list[dict]:
    listener = config["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


def filter_config(config: dict, name: str) -> dict:
    return next(f["typed_config"] for f in http_filters(config) if f["name"] == name)


def routes(config: dict) -> list[dict]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return manager["route_config"]["virtual_hosts"][0]["routes"]


# --- Envoy accepts every rendering ---------------------------------------------------------------

@pytest.mark.parametrize("auth_required", [True, False], ids=["auth", "legacy"])
@pytest.mark.parametrize("env", ENVS)
def test_envoy_accepts_rendered_config(env, auth_required, tmp_path):
    path = tmp_path / f"{env}.yaml"
    path.write_text(gw.render(gw.preset(env, auth_required=auth_required)))
    result = validate(path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_envoy_accepts_a_stack_with_some_services_only(tmp_path):
    """The local stack routes only the services it runs."""
    config = gw.GatewayConfig(upstreams={"user": gw.Upstream("127.0.0.1", 18101), "project": gw.Upstream("127.0.0.1", 18102)}, listen_port=18000, admin_port=19901)
    path = tmp_path / "partial.yaml"
    path.write_text(gw.render(config))
    result = validate(path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    clusters = {c["name"] for c in yaml.safe_load(path.read_text())["static_resources"]["clusters"]}
    assert clusters == {"user", "project"}


def test_cli_writes_the_compose_config(tmp_path):
    out = tmp_path / "envoy.yaml"
    assert gw.main(["--env", "compose", "--auth-required", "false", "-o", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    address = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert address == {"address": "0.0.0.0", "port_value": 8000}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    endpoints = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] for c in config["static_resources"]["clusters"]}
    assert endpoints["video"] == {"address": "video", "port_value": 8080}


def test_config_needs_the_user_service_and_known_names():
    with pytest.raises(ValueError, match="user service"):
        gw.GatewayConfig(upstreams={"project": gw.Upstream("project", 8080)})
    with pytest.raises(ValueError, match="unknown services"):
        gw.GatewayConfig(upstreams={"user": gw.Upstream("user", 8080), "billing": gw.Upstream("billing", 8080)})
    with pytest.raises(ValueError, match="unknown environment"):
        gw.preset("staging")


# --- "greater than N" --------------------------------------------------------------------------

def greater(n: int, value: str) -> bool:
    return re.fullmatch(gw.greater_than_regex(n), value) is not None


LIMITS = [0, 1, 5, 9, 10, 11, 19, 99, 100, 101, 109, 990, 999, 1000, 1001, 2**20, 256 * 2**20, 2**31, 10**9, 10**12, 123456789]


@pytest.mark.parametrize("n", LIMITS)
def test_regex_matches_exactly_the_integers_above_n(n):
    rng = random.Random(n)
    candidates = set(range(max(0, n - 300), n + 300))
    candidates |= {0, 1, 9, 10, n * 10, n * 10 + 9, 10 ** len(str(n)), 10 ** len(str(n)) - 1, 10 ** (len(str(n)) - 1)}
    candidates |= {rng.randrange(0, 10 * (n + 1)) for _ in range(300)}
    for value in sorted(candidates):
        assert greater(n, str(value)) == (value > n), value


@pytest.mark.parametrize("n", [0, 7, 2**20, 2**31])
def test_regex_allows_leading_zeros_and_refuses_non_numbers(n):
    assert greater(n, "000" + str(n + 1))
    assert not greater(n, "000" + str(n))
    for text in ["", "-1", "1e9", " 9", "abc", str(n + 1) + "x"]:
        assert not greater(n, text), text


def test_regex_refuses_negative_limits():
    with pytest.raises(ValueError):
        gw.greater_than_regex(-1)


# --- what the rendered config says ------------------------------------------------------------

@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(gw.render(gw.preset("local")))


def test_filters_in_order_and_client_payload_header_removed(config):
    assert [f["name"] for f in http_filters(config)] == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.cors",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.router",
    ]
    mutations = filter_config(config, "envoy.filters.http.header_mutation")["mutations"]["request_mutations"]
    assert {"remove": "x-jwt-payload"} in mutations


def test_jwt_provider_reads_both_schemes_and_forwards_the_payload(config):
    jwt = filter_config(config, "envoy.filters.http.jwt_authn")
    provider = jwt["providers"]["mlstudio"]
    assert provider["issuer"] == "mlstudio"
    assert provider["forward"] is True
    assert provider["forward_payload_header"] == "x-jwt-payload"
    assert {h["value_prefix"] for h in provider["from_headers"]} == {"Bearer ", "Token "}
    remote = provider["remote_jwks"]
    assert remote["http_uri"]["uri"] == "http://127.0.0.1:8101/users/.well-known/jwks.json"
    assert remote["http_uri"]["cluster"] == "user"
    assert remote["async_fetch"]["fast_listener"] is False
    assert jwt["bypass_cors_preflight"] is True


def test_open_paths_need_no_token_and_everything_else_does(config):
    rules = filter_config(config, "envoy.filters.http.jwt_authn")["rules"]
    open_matches = [rule["match"] for rule in rules if "requires" not in rule]
    assert {"path": "/healthz"} in open_matches
    assert {"prefix": "/docs/"} in open_matches
    assert {"path_separated_prefix": "/users"} in open_matches
    assert {"safe_regex": {"regex": gw.MEDIA_FILE_REGEX}} in open_matches
    assert rules[-1] == {"match": {"prefix": "/"}, "requires": {"provider_name": "mlstudio"}}


def test_legacy_mode_lets_a_missing_token_pass_but_verifies_a_present_one(caplog):
    with caplog.at_level("WARNING"):
        legacy = yaml.safe_load(gw.render(gw.preset("local", auth_required=False)))
    assert "AUTH_REQUIRED=false" in caplog.text
    last = filter_config(legacy, "envoy.filters.http.jwt_authn")["rules"][-1]
    assert last["requires"] == {"requires_any": {"requirements": [{"provider_name": "mlstudio"}, {"allow_missing": {}}]}}


def test_media_regex_opens_only_file_paths():
    pattern = re.compile(gw.MEDIA_FILE_REGEX)
    assert pattern.search("/images/632/file") and pattern.search("/videos/1/file") and pattern.search("/models/3/file")
    assert pattern.search("/projects/3/exports/12/file")
    assert pattern.search("/models/3/evaluation/file") and pattern.search("/models/3/evaluation/12/file")
    for path in ["/images/632", "/images/all/file", "/projects/3/file", "/images/1/file/x", "/x/images/1/file",
                 "/projects/3/exports/12", "/projects/3/exports/file", "/projects/x/exports/1/file",
                 "/models/3/evaluation", "/models/3/evaluate/file", "/models/3/evaluation/x/file", "/images/3/evaluation/file"]:
        assert not pattern.search(path), path


def test_a_projects_exports_go_to_the_image_service_before_the_project_prefix(config):
    listed = routes(config)
    names = [route["name"] for route in listed]
    by_name = {route["name"]: route for route in listed}
    assert names.index("image-export-file") < names.index("image-exports") < names.index("project")
    assert by_name["image-exports"]["route"]["cluster"] == "image"
    assert by_name["image-export-file"]["route"]["timeout"] == "0s"
    exports = re.compile(by_name["image-exports"]["match"]["safe_regex"]["regex"])
    for path in ["/projects/3/exports", "/projects/3/exports/12", "/projects/3/imports", "/projects/3/imports/4", "/projects/3/duplicates",
                 "/projects/3/relabels", "/projects/3/relabels/5", "/projects/3/relabels/5/cancel"]:
        assert exports.search(path), path
    for path in ["/projects/3", "/projects/all", "/projects/3/exportsx", "/projects/3/exports/12/x", "/projects/3/imports/4/file",
                 "/projects/3/duplicates/1", "/projects/3/relabels/5/x", "/projects/3/relabels/cancel"]:
        assert not exports.search(path), path
    # a dataset zip is an upload: the image upload limit and timeout, not the JSON limit
    upload, too_large = by_name["image-import-upload"], by_name["image-import-upload-too-large"]
    assert upload["route"]["cluster"] == "image" and upload["route"]["timeout"] == "3600s"
    assert names.index("image-import-upload") < names.index("too-large")
    assert re.compile(upload["match"]["safe_regex"]["regex"]).search("/projects/3/imports")
    length = next(h for h in too_large["match"]["headers"] if h["name"] == "content-length")
    assert length["string_match"]["safe_regex"]["regex"] == gw.greater_than_regex(256 * gw.MiB)


def test_upload_routes_have_their_limits_and_long_timeouts(config):
    by_name = {route["name"]: route for route in routes(config)}
    too_large = by_name["video-upload-too-large"]
    assert too_large["direct_response"]["status"] == 413
    length = next(h for h in too_large["match"]["headers"] if h["name"] == "content-length")
    assert length["string_match"]["safe_regex"]["regex"] == gw.greater_than_regex(2 * gw.GiB)
    assert by_name["video-upload"]["route"]["timeout"] == "3600s"
    assert by_name["image-upload"]["match"]["prefix"] == "/images/"
    assert by_name["image-file"]["route"]["timeout"] == "0s"
    assert by_name["project"]["route"]["timeout"] == "60s"
    names = [route["name"] for route in routes(config)]
    # limits come before the routes they guard; the JSON limit after the upload routes
    assert names.index("video-upload-too-large") < names.index("video-upload") < names.index("too-large") < names.index("video")


def test_cors_policy_allows_the_frontend(config):
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    policy = manager["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert {"exact": "http://localhost:3000"} in policy["allow_origin_string_match"]
    assert policy["allow_credentials"] is True
    assert "authorization" in policy["allow_headers"]
    assert "content-range" in policy["expose_headers"]


def test_tokens_must_expire_and_clock_skew_is_small(config):
    provider = filter_config(config, "envoy.filters.http.jwt_authn")["providers"]["mlstudio"]
    assert provider["require_expiration"] is True
    assert provider["clock_skew_seconds"] == gw.GatewayConfig.jwt_clock_skew_s == 30


def _local_reply_mappers(config: dict) -> list[dict]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return manager["local_reply_config"]["mappers"]


def test_refused_paths_get_a_message_of_their_own_before_other_400s(config):
    """Envoy refuses escaped slashes and NULs in paths with an empty 400; the first mapper gives
    it the API's error shape with a sentence, the generic 400 says which check failed."""
    mappers = _local_reply_mappers(config)
    first = mappers[0]
    expression = first["filter"]["extension_filter"]["typed_config"]["expression"]
    assert "path_normalization_failed" in expression and "response.code == 400" in expression
    assert first["body_format_override"]["json_format"]["code"] == "bad_path"
    assert "escaped slash (%%2F" in first["body_format_override"]["json_format"]["message"]
    (generic,) = [m for m in mappers if m["filter"].get("status_code_filter", {}).get("comparison") == {
        "op": "EQ", "value": {"default_value": 400, "runtime_key": "mlstudio.local_reply.status_400"}}]
    assert generic["body_format_override"]["json_format"]["message"] == "the gateway refused a malformed request (%RESPONSE_CODE_DETAILS%)"
