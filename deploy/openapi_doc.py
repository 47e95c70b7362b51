"""Writes gateway/openapi.json: one OpenAPI (Swagger 2.0) document of the whole public API, the
gateway's view, which the gateway serves at GET /docs/openapi.json.

Each service's document is the one its own docs page serves (`/docs/<service>/swagger.json`),
taken from the service's app built in-process (`<service>_service.app.create_app`, with its
settings' defaults and no collaborators: the routes are only listed, never called), so the
combined document cannot say other than the services do. Services are found by walking
`services/`, as for the configuration tables; a route added to a service changes the document,
and a test fails until `make docs` has rewritten it.

    python -m deploy.openapi_doc           # rewrite gateway/openapi.json (`make docs`)
    python -m deploy.openapi_doc --check   # exit 1 when it differs from the services' documents
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path

from mlstudio.common import settings as settings_lib

from deploy import configuration_doc

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "gateway" / "openapi.json"
INFO = {
    "title": "ML Studio API",
    "version": "1.0",
    "description": "The whole public REST API, as the gateway serves it. Log in with POST /users/auth/, then send "
                   "`Authorization: Bearer <token>`. Each service's own page: /docs/users/, /docs/projects/, "
                   "/docs/images/, /docs/models/, /docs/videos/.",
}


class _Unused:
    """Stands in for a service's collaborators (core, repositories): building the app only adds
    routes; nothing here is called."""


def service_documents() -> dict[str, dict]:
    """Each service's OpenAPI document, by service folder name, as its docs page serves it."""
    documents = {}
    for service, settings_class in configuration_doc.service_settings():
        module = importlib.import_module(f"{service}_service.app")
        settings = settings_lib.load(settings_class, {"MONGO_URI": "mongodb://unused"})
        arguments = {}
        for name in inspect.signature(module.create_app).parameters:
            arguments[name] = settings if name == "settings" else None if name == "readiness" else _Unused()
        app = module.create_app(**arguments)
        specs_path = next(rule.rule for rule in app.url_map.iter_rules() if rule.endpoint == "specs")
        response = app.test_client().get(specs_path)
        if response.status_code != 200 or "paths" not in (response.get_json() or {}):
            raise SystemExit(f"the {service} service's OpenAPI document could not be built: {response.get_data(as_text=True)[:300]}")
        documents[service] = response.get_json()
    return documents


def combined(documents: dict[str, dict]) -> dict:
    """One document of all the services' paths, definitions and tags."""
    paths, definitions, tags, security_definitions = {}, {}, {}, {}
    security = None
    for service, document in documents.items():
        for path, item in document["paths"].items():
            if path in paths:
                raise SystemExit(f"{path} is documented by two services (the {service} service and another)")
            # flask-restx lists a resource's methods in no fixed order: sorted, the file is stable.
            paths[path] = {key: item[key] for key in sorted(item, key=lambda key: (key != "parameters", key))}
        for name, definition in document.get("definitions", {}).items():
            if name in definitions and definitions[name] != definition:
                raise SystemExit(f"the {service} service's model {name!r} differs from another service's model of that "
                                 "name: give one of them another name")
            definitions[name] = definition
        for tag in document.get("tags", []):
            tags.setdefault(tag["name"], tag)
        security_definitions.update(document.get("securityDefinitions", {}))
        security = security or document.get("security")
    return {
        "swagger": "2.0",
        "info": INFO,
        "basePath": "/",
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": security_definitions,
        "security": security or [],
        "tags": sorted(tags.values(), key=lambda tag: tag["name"]),
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(definitions.items())),
    }


def render() -> str:
    return json.dumps(combined(service_documents()), indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.openapi_doc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when gateway/openapi.json differs from the services' documents")
    args = parser.parse_args(argv)
    return configuration_doc.write_or_check(OUTPUT, render(), check=args.check, source="the services' documents")


if __name__ == "__main__":
    sys.exit(main())
