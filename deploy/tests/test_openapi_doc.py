"""gateway/openapi.json, the whole public API in one document that the gateway serves, is the
services' own documents combined: a route added, removed or changed without `make docs` fails
here."""
from __future__ import annotations

import json

import pytest
import yaml

from deploy import openapi_doc
from gateway import render


@pytest.fixture(scope="module")
def documents():
    return openapi_doc.service_documents()


def test_the_committed_document_is_the_services_documents_combined(documents):
    assert openapi_doc.OUTPUT.read_text() == json.dumps(openapi_doc.combined(documents), indent=1, ensure_ascii=False) + "\n", \
        "gateway/openapi.json is out of date: run `make docs`"


def test_it_holds_every_service_with_the_scheme_and_the_error_model(documents):
    assert set(documents) == {"user", "project", "image", "model", "video"}
    combined = openapi_doc.combined(documents)
    for prefix in ("/users/", "/projects/", "/images/", "/models/", "/videos/"):
        assert any(path.startswith(prefix) for path in combined["paths"]), prefix
    assert combined["securityDefinitions"]["Bearer"]["in"] == "header"
    assert combined["security"] == [{"Bearer": []}]
    assert combined["definitions"]["Error"]["required"] == ["message", "code"]
    assert sum(len(document["paths"]) for document in documents.values()) == len(combined["paths"])


def test_a_route_added_to_a_service_changes_the_document(documents):
    changed = json.loads(json.dumps(documents))
    changed["project"]["paths"]["/projects/{project_id}/archive"] = {"post": {"responses": {"200": {"description": "ok"}}}}
    assert "/projects/{project_id}/archive" in openapi_doc.combined(changed)["paths"]
    assert openapi_doc.combined(changed) != json.loads(openapi_doc.OUTPUT.read_text())


def test_two_services_may_not_document_one_path_or_two_models_of_one_name(documents):
    clash = json.loads(json.dumps(documents))
    clash["video"]["paths"]["/projects/all"] = {}
    with pytest.raises(SystemExit, match="/projects/all"):
        openapi_doc.combined(clash)
    clash = json.loads(json.dumps(documents))
    clash["video"]["definitions"]["Project"] = {"type": "object"}
    with pytest.raises(SystemExit, match="Project"):
        openapi_doc.combined(clash)


def test_the_gateway_configuration_serves_it():
    bootstrap = yaml.safe_load(render.render(render.preset("compose")))
    listener = next(item for item in bootstrap["static_resources"]["listeners"] if item["name"] == "public")
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    route = next(item for host in manager["route_config"]["virtual_hosts"] for item in host["routes"]
                 if item["match"].get("path") == render.OPENAPI_PATH)
    body = route["direct_response"]["body"]["inline_string"]
    assert json.loads(body) == json.loads(openapi_doc.OUTPUT.read_text())
    assert manager["route_config"]["max_direct_response_body_size_bytes"] >= len(body.encode())


def _lacks_example(schema: dict) -> bool:
    if "example" in schema or "$ref" in schema or "allOf" in schema:  # a nested definition has its own
        return False
    return schema.get("type") != "array" or _lacks_example(schema.get("items", {}))


def test_every_field_of_the_requests_and_answers_has_an_example(documents):
    """Swagger UI builds each request body and answer shown on the docs page from its fields'
    examples; a field without one shows as "string" or 0."""
    missing = [f"{service}: {name}.{field}" for service, document in documents.items()
               for name, schema in document.get("definitions", {}).items()
               for field, property_schema in schema.get("properties", {}).items() if _lacks_example(property_schema)]
    assert not missing, missing
