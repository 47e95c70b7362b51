"""Ids and paging numbers from requests: only 1 to 2^63 - 1 (what gRPC's int64 and MongoDB can
carry) gets through; a path id out of range is a JSON 404, a parameter out of range a JSON 400
that says what is allowed."""
import base64
import json

import pytest
from flask_restx import Resource

from mlstudio.common import auth, errors, http_app, ids

MAX = 2**63 - 1
INVALID = ["0", "-1", "abc", "1.5", " 1", "1 ", "+1", "1_000", "\u0661", "0x10", str(2**63), str(2**64), str(10**30), "9" * 5000]


@pytest.mark.parametrize("raw", INVALID)
def test_invalid_id_parameter_is_400_naming_the_range(raw):
    with pytest.raises(errors.InvalidArgument) as raised:
        ids.parse_id("project_id", raw)
    assert raised.value.message == "project_id must be an integer between 1 and 9223372036854775807"
    assert raised.value.http_status == 400


@pytest.mark.parametrize("raw,value", [("1", 1), ("007", 7), (str(MAX), MAX)])
def test_valid_ids_parse(raw, value):
    assert ids.parse_id("project_id", raw) == value


def test_missing_id_is_required_or_none():
    with pytest.raises(errors.InvalidArgument, match="query parameter project_id is required"):
        ids.parse_id("project_id", None)
    with pytest.raises(errors.InvalidArgument, match="project_id is required"):
        ids.parse_id("project_id", "")
    assert ids.parse_id("project_id", None, required=False) is None


def test_offset_may_be_zero_but_not_negative_or_huge():
    assert ids.parse_int64("offset", "0", minimum=0) == 0
    for raw in ("-1", str(2**63)):
        with pytest.raises(errors.InvalidArgument, match="offset must be an integer between 0 and 9223372036854775807"):
            ids.parse_int64("offset", raw, minimum=0)


@pytest.fixture
def client():
    app, api = http_app.make_app("things", title="t", description="d", readiness={})

    @api.route("/things/<int:thing_id>")
    class Thing(Resource):
        def get(self, thing_id):
            return {"id": thing_id}

    @api.route("/things/<string:tag>")
    class Tagged(Resource):
        def get(self, tag):
            return {"tag": tag}

    return app.test_client()


def test_path_id_in_range_reaches_the_route(client):
    assert client.get(f"/things/{MAX}").get_json() == {"id": MAX}
    assert client.get("/things/1").get_json() == {"id": 1}


@pytest.mark.parametrize("raw", ["0", str(2**63), str(2**64), str(10**30), "9" * 5000])
def test_path_id_out_of_range_is_json_404_and_never_another_route(raw, client):
    response = client.get(f"/things/{raw}")
    assert response.status_code == 404
    assert response.get_json() == {"message": "no such resource: ids are integers between 1 and 9223372036854775807", "code": "not_found"}


def test_path_with_a_nul_or_control_character_is_json_400(client):
    for path in ("/things/%00", "/things/a%00b", "/things/%1b"):
        response = client.get(path)
        assert response.status_code == 400, path
        assert response.get_json()["code"] == "bad_path" and "control character" in response.get_json()["message"]


def test_escaped_slash_reaching_a_service_is_json_404(client):
    response = client.get("/things/1%2F2")
    assert response.status_code == 404 and response.get_json()["code"] == "not_found"


def test_openapi_still_calls_path_ids_integers(client):
    spec = client.get("/docs/things/swagger.json").get_json()
    parameters = spec["paths"]["/things/{thing_id}"]["parameters"]
    assert parameters[0]["type"] == "integer"


@pytest.mark.parametrize("subject", [str(2**63), 2**64, "0", "-1", True, None, "abc"])
def test_token_subject_that_is_not_an_id_is_unauthenticated(subject):
    payload = base64.urlsafe_b64encode(json.dumps({"sub": subject}).encode()).decode().rstrip("=")
    with pytest.raises(errors.Unauthenticated):
        auth.caller_id({auth.PAYLOAD_HEADER: payload}, {}, True)
