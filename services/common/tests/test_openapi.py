"""Every service's OpenAPI document declares the Bearer scheme, ids as integers and the error
responses of the shared error table; its docs page loads its assets from the service's own path
and sends a pasted token as `Bearer <token>`."""
import pytest
from flask_restx import Namespace, Resource, fields

from mlstudio.common import errors, http_app, openapi


@pytest.fixture
def client():
    app, api = http_app.make_app("things", title="Things", description="d", readiness={})
    ns = Namespace("things", path="/things")
    thing = ns.model("Thing", {"id": fields.Integer(example=1)})

    @ns.route("/all")
    @ns.doc(params={"user_id": "the caller", "project_id": "the project"})
    class Things(Resource):
        @ns.marshal_list_with(thing)
        def get(self):
            return []

        @ns.response(409, "Already there")
        @ns.doc(params={"file": {"in": "formData", "type": "file"}})
        def post(self):
            return {}, 201

    @ns.route("/<int:thing_id>/file")
    @ns.doc(params={"expires": "from the signed URL", "signature": "from the signed URL"})
    class ThingFile(Resource):
        def get(self, thing_id):
            return {}

    @ns.route("/open")
    class Open(Resource):
        @ns.doc(security=[])
        def post(self):
            return {}

    api.add_namespace(ns)
    return app.test_client()


def spec_of(client):
    response = client.get("/docs/things/swagger.json")
    assert response.status_code == 200
    return response.get_json()


def test_the_bearer_scheme_is_declared_and_required_by_default(client):
    spec = spec_of(client)
    assert spec["securityDefinitions"] == openapi.AUTHORIZATIONS
    assert spec["securityDefinitions"]["Bearer"]["name"] == "Authorization"
    assert spec["security"] == [{"Bearer": []}]
    assert "security" not in spec["paths"]["/things/all"]["get"]  # the document's default applies
    assert spec["paths"]["/things/open"]["post"]["security"] == []
    assert spec["paths"]["/things/{thing_id}/file"]["get"]["security"] == []  # signed URLs need no token


def test_ids_are_integers_wherever_they_are_passed(client):
    spec = spec_of(client)
    parameters = {p["name"]: p for p in spec["paths"]["/things/all"]["parameters"]}
    for name in ("user_id", "project_id"):
        assert (parameters[name]["type"], parameters[name]["minimum"]) == ("integer", 1)
    path_parameters = {p["name"]: p for p in spec["paths"]["/things/{thing_id}/file"]["parameters"]}
    assert path_parameters["thing_id"]["type"] == "integer"
    assert path_parameters["signature"]["type"] == "string"


def test_error_responses_come_from_the_shared_error_table(client):
    spec = spec_of(client)
    assert spec["definitions"]["Error"]["required"] == ["message", "code"]
    listing = spec["paths"]["/things/all"]["get"]["responses"]
    assert {"400", "401", "403", "404", "500", "503"} <= set(listing)
    assert "413" not in listing and "415" not in listing
    assert listing["404"]["schema"] == {"$ref": "#/definitions/Error"}
    assert listing["404"]["examples"]["application/json"] == {"message": "project 9 not found", "code": "not_found"}
    assert listing["401"]["examples"]["application/json"]["code"] == "unauthenticated"
    upload = spec["paths"]["/things/all"]["post"]["responses"]
    assert {"409", "413", "415", "422"} <= set(upload)
    assert upload["409"]["description"] == "Already there"  # what the route says wins
    assert upload["409"]["examples"]["application/json"]["code"] == "already_exists"
    assert "401" not in spec["paths"]["/things/open"]["post"]["responses"]
    assert "401" not in spec["paths"]["/things/{thing_id}/file"]["get"]["responses"]


def test_every_status_of_the_table_has_an_example_and_a_code():
    table = errors.http_table()
    assert {400, 401, 403, 404, 406, 409, 413, 415, 422, 500, 501, 503, 504} <= set(table)
    for status, cls in table.items():
        assert cls.http_status == status and cls.example and cls.code, cls


def test_the_docs_page_is_self_contained_and_prefixes_a_bare_token(client):
    page = client.get("/docs/things/").get_data(as_text=True)
    assert "/docs/things/swaggerui/swagger-ui-bundle.js" in page and '"/swaggerui/' not in page
    assert "requestInterceptor" in page and '"Bearer " + value.trim()' in page
    assert client.get("/docs/things/swaggerui/swagger-ui-bundle.js").status_code == 200
    assert client.get("/swaggerui/swagger-ui.css").status_code == 200  # the shared path still answers
