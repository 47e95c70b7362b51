"""Settings from the environment, caller identity, and signed media URLs."""
import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlstudio.common import auth, errors
from mlstudio.common.media_urls import MediaSigner
from mlstudio.common.settings import ConfigError, ServiceSettings, env, load, require


def test_settings_read_and_convert_the_environment():
    settings = load(ServiceSettings, {"MONGO_URI": "mongodb://x", "HTTP_PORT": "9000", "AUTH_REQUIRED": "false", "DATA_DIR": "/tmp/d"})
    assert settings.http_port == 9000 and settings.auth_required is False and settings.data_dir == Path("/tmp/d")
    assert settings.object_storage_url == "file:///tmp/d/objects"


def test_missing_required_setting_names_the_variable():
    with pytest.raises(ConfigError, match="MONGO_URI"):
        load(ServiceSettings, {})


def test_malformed_setting_names_the_variable():
    with pytest.raises(ConfigError, match="HTTP_PORT"):
        load(ServiceSettings, {"MONGO_URI": "m", "HTTP_PORT": "eighty"})


def test_subclass_settings_and_tuples():
    @dataclass(frozen=True, kw_only=True)
    class Extra(ServiceSettings):
        origins: tuple[str, ...] = env("ORIGINS", ())

    assert load(Extra, {"MONGO_URI": "m", "ORIGINS": "a, b,"}).origins == ("a", "b")


def payload(claims):
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


def test_caller_is_the_token_subject():
    assert auth.caller_id({auth.PAYLOAD_HEADER: payload({"sub": "7"})}, {"user_id": "7"}, True) == 7


def test_user_id_that_is_not_the_caller_is_forbidden():
    with pytest.raises(errors.PermissionDenied):
        auth.caller_id({auth.PAYLOAD_HEADER: payload({"sub": "7"})}, {"user_id": "8"}, True)


def test_no_identity_is_unauthenticated_unless_legacy_mode():
    with pytest.raises(errors.Unauthenticated):
        auth.caller_id({}, {"user_id": "8"}, True)
    assert auth.caller_id({}, {"user_id": "8"}, False) == 8
    with pytest.raises(errors.InvalidArgument):
        auth.caller_id({}, {}, False)


def test_legacy_request_naming_no_user_acts_for_the_owner_of_the_resource():
    assert auth.caller_id({}, {}, False, owner_of=lambda: 42) == 42


def test_owner_look_up_is_used_only_when_nothing_names_the_caller():
    def never() -> int:
        raise AssertionError("the owner was looked up although the request names its caller")

    assert auth.caller_id({}, {"user_id": "8"}, False, owner_of=never) == 8
    assert auth.caller_id({auth.PAYLOAD_HEADER: payload({"sub": "7"})}, {}, False, owner_of=never) == 7
    with pytest.raises(errors.PermissionDenied):
        auth.caller_id({auth.PAYLOAD_HEADER: payload({"sub": "7"})}, {"user_id": "8"}, False, owner_of=never)
    with pytest.raises(errors.Unauthenticated):
        auth.caller_id({}, {}, True, owner_of=never)


def test_owner_look_up_of_a_missing_resource_answers_not_found():
    def missing() -> int:
        raise errors.NotFound("project 9 not found")

    with pytest.raises(errors.NotFound):
        auth.caller_id({}, {}, False, owner_of=missing)


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "1.5"])
def test_malformed_user_id_is_bad_input(raw):
    with pytest.raises(errors.InvalidArgument):
        auth.caller_id({}, {"user_id": raw}, False)


def test_signed_url_verifies_until_it_expires():
    signer = MediaSigner("k", "http://gw:8000/", 100)
    url = signer.url("/images/5/file", now=1000)
    assert url.startswith("http://gw:8000/images/5/file?expires=")
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    signer.verify("/images/5/file", query["expires"], query["signature"], now=1050)
    with pytest.raises(errors.PermissionDenied, match="expired"):
        signer.verify("/images/5/file", query["expires"], query["signature"], now=int(query["expires"]) + 1)


def test_urls_signed_as_a_batch_are_the_single_urls_and_verify():
    """A list signs its URLs with one expiry and a prepared HMAC: the URLs must be exactly those
    signed one by one (an HMAC computed from scratch), so either kind verifies."""
    import hashlib
    import hmac

    signer = MediaSigner("k", "http://gw/", 100)
    batch = signer.batch(now=1234)
    for image_id in (1, 5, 2**62):
        path = f"/images/{image_id}/file"
        assert batch.url(path) == signer.url(path, now=1234)
        expected = hmac.new(b"k", f"{path}\n{batch.expires}".encode(), hashlib.sha256).hexdigest()
        assert batch.url(path) == f"http://gw{path}?expires={batch.expires}&signature={expected}"
        signer.verify(path, str(batch.expires), expected, now=1234)


def test_tampered_signed_url_is_refused():
    signer = MediaSigner("k", "http://gw", 100)
    query = dict(part.split("=") for part in signer.url("/images/5/file", now=0).split("?")[1].split("&"))
    with pytest.raises(errors.PermissionDenied):
        signer.verify("/images/6/file", query["expires"], query["signature"], now=0)
    with pytest.raises(errors.PermissionDenied):
        signer.verify("/images/5/file", str(int(query["expires"]) + 100), query["signature"], now=0)
    with pytest.raises(errors.PermissionDenied):
        MediaSigner("other", "http://gw", 100).verify("/images/5/file", query["expires"], query["signature"], now=0)


def test_a_setting_a_process_needs_fails_fast_by_its_variable_name():
    settings = load(ServiceSettings, {"MONGO_URI": "m", "IMAGE_GRPC_ADDR": "host:1"})
    require(settings, "image_grpc_addr")
    with pytest.raises(ConfigError, match=r"PROJECT_GRPC_ADDR is not set \(images belong to projects\)"):
        require(settings, "image_grpc_addr", "project_grpc_addr", why="images belong to projects")
