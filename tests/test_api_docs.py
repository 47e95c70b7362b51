"""The services' OpenAPI docs, through the gateway, as a person uses them: each declares the
Bearer scheme (the docs page's Authorize button), ids as integers, `method` as a required enum,
and every error response with its schema; a request built from the document as Swagger UI's
"Try it out" builds it, with the scheme's header, answers 200; each page loads its assets
through its own service."""
from __future__ import annotations

import re

import pytest

SERVICES = ("users", "projects", "images", "models", "videos")


@pytest.fixture
def specs(stack, api):
    session = api(stack)
    documents = {}
    for service in SERVICES:
        response = session.get(f"/docs/{service}/swagger.json")
        assert response.status_code == 200, (service, response.text)
        documents[service] = response.json()
    return documents


def operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield path, method, operation, [*item.get("parameters", []), *operation.get("parameters", [])]


def test_every_service_declares_the_bearer_scheme(specs):
    for service, spec in specs.items():
        scheme = spec["securityDefinitions"]["Bearer"]
        assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization"), service
        assert spec["security"] == [{"Bearer": []}], service
    users = specs["users"]["paths"]
    assert users["/users/auth/"]["post"]["security"] == [] and users["/users/"]["post"]["security"] == []


def test_ids_are_integers_and_errors_have_their_schema_everywhere(specs):
    seen_ids = 0
    for service, spec in specs.items():
        for path, method, operation, parameters in operations(spec):
            for parameter in parameters:
                if re.fullmatch(r"id|.+_id", parameter["name"]):
                    seen_ids += 1
                    assert parameter["type"] == "integer", (service, path, method, parameter)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["schema"] == {"$ref": "#/definitions/Error"}, (service, path, method, status)
            assert "400" in operation["responses"] and "503" in operation["responses"], (service, path, method)
    assert seen_ids > 20


def test_method_of_a_model_upload_is_a_required_enum(specs):
    upload = specs["models"]["paths"]["/models/all"]["post"]
    method = next(p for p in upload["parameters"] if p["name"] == "method")
    assert method["required"] is True and method["enum"] == ["upload", "create"] and method["in"] == "query"


def test_authorize_then_try_it_out_answers_200(stack, api, register, specs):
    """What the docs page does: the scheme says which header carries the token; the page sends
    `Bearer <token>` (the token alone, pasted into Authorize, gets `Bearer ` added)."""
    user_id, token = register(stack, "docs-reader")
    created = api(stack, token).post("/projects/all", params={"user_id": user_id},
                                     json={"title": "Docs", "description": "", "type": "Classification"})
    assert created.status_code == 201, created.text
    spec = specs["projects"]
    scheme = spec["securityDefinitions"][next(iter(spec["security"][0]))]
    path = next(p for p in spec["paths"] if re.fullmatch(r"/projects/\{\w+\}", p))
    url = path.replace("{project_id}", str(created.json()["id"]))
    assert "get" in spec["paths"][path]
    answer = api(stack).get(url, headers={scheme["name"]: f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["title"] == "Docs"
    unauthorized = api(stack).get(url)
    assert unauthorized.status_code == 401 and "401" in spec["paths"][path]["get"]["responses"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_docs_page_loads_its_assets_through_its_own_service(stack, api, service):
    session = api(stack)
    page = session.get(f"/docs/{service}/")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', page.text)
    assert assets and all(asset.startswith(f"/docs/{service}/swaggerui/") for asset in assets), assets
    for asset in assets:
        assert session.get(asset).status_code == 200, asset
    assert "requestInterceptor" in page.text


def test_the_gateway_serves_the_whole_api_in_one_document(stack, api, specs):
    """GET /docs/openapi.json (no token): every service's paths and models, the Bearer scheme."""
    response = api(stack).get("/docs/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert "mlstudio-openapi.json" in response.headers["content-disposition"]
    document = response.json()
    assert document["securityDefinitions"]["Bearer"]["name"] == "Authorization"
    for service, spec in specs.items():
        assert set(spec["paths"]) <= set(document["paths"]), service
        for path in spec["paths"]:
            assert set(document["paths"][path]) == set(spec["paths"][path]), (service, path)
        assert set(spec["definitions"]) <= set(document["definitions"]), service
