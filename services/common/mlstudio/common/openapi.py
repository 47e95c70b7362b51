"""What every service's OpenAPI (Swagger 2.0) document says beyond its routes, added in one place.

flask-restx writes each service's document from its routes; `complete` then adds what holds for
the whole API, so that no route can forget it:

- the Bearer security scheme (the `Authorization` header the gateway verifies), required by
  every operation but those that say otherwise (`security=[]`: sign-up, login, the JWKS) and
  signed media URLs (an operation that takes a `signature`);
- ids as integers: every parameter named `id` or `*_id` (path, query or form), 1 or more;
- the error responses, from the shared error table (`errors.http_table`), each with the
  `Error` schema `{message, code}` and an example: 400, 500 and 503 for every operation, 401
  where a token is needed, 403 where a `user_id` names the caller, 404 where an id names a
  resource, 413 for bodies, 415 and 422 for file uploads; a route declares the others it gives
  (409, 406, 504, ...) with `@ns.response(status, description)` and gets the schema and example.

The docs page (`docs_page`) loads its assets from the service's own `/docs/<service>/` path and
sends a token pasted without its scheme as `Bearer <token>`.
"""
from __future__ import annotations

import copy
import logging
import re

from . import errors

log = logging.getLogger(__name__)

SCHEME = "Bearer"
AUTHORIZATIONS = {SCHEME: {
    "type": "apiKey",
    "in": "header",
    "name": "Authorization",
    "description": "The token that POST /users/auth/ answers, as `Bearer <token>` (on the docs page the token alone is "
                   "enough: `Bearer ` is added). `Token <token>` works too.",
}}
ERROR_DEFINITION = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "required": ["message", "code"],
    "properties": {
        "message": {"type": "string", "description": "what is wrong, for a person", "example": errors.NotFound.example},
        "code": {"type": "string", "description": "what is wrong, for a program: stable, snake_case", "example": errors.NotFound.code},
    },
}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_ID_NAME = re.compile(r"^(?:id|[a-z][a-z0-9_]*_id)$")
# The Swagger UI option that rewrites each request "Try it out" sends (see `docs_page`).
_PREFIX_TOKEN = (
    'requestInterceptor: (request) => {\n'
    '                    const value = request.headers && request.headers.Authorization;\n'
    '                    if (value && !/^(Bearer|Token) /i.test(value)) { request.headers.Authorization = "Bearer " + value.trim(); }\n'
    '                    return request;\n'
    '                },\n'
    '                dom_id: "#swagger-ui",'
)


def is_id(name: str) -> bool:
    return bool(_ID_NAME.match(name))


def _type_id(parameter: dict) -> None:
    if is_id(parameter.get("name", "")) and parameter.get("in") != "body":
        parameter.update(type="integer", format="int64", minimum=1)


def _error_statuses(path: str, method: str, parameters: list[dict], secured: bool) -> set[int]:
    names = {parameter.get("name") for parameter in parameters}
    statuses = {400, 500, 503}
    if secured:
        statuses.add(401)
    if "user_id" in names:
        statuses.add(403)
    if "{" in path or any(is_id(name) and name != "user_id" for name in names):
        statuses.add(404)
    if method in ("post", "put", "patch"):
        statuses.add(413)
    if any(parameter.get("type") == "file" for parameter in parameters):
        statuses |= {415, 422}
    return statuses


def _error_response(status: int, declared: dict | None) -> dict:
    cls = errors.http_table().get(status, errors.DomainError)
    response = dict(declared or {})
    if not response.get("description"):
        # The class's docstring up to its mapping ("No or bad credentials: HTTP 401, gRPC ...").
        response["description"] = re.split(r":\s*HTTP \d", " ".join((cls.__doc__ or cls.code).split()))[0]
    response.setdefault("schema", {"$ref": f"#/definitions/{ERROR_DEFINITION}"})
    response.setdefault("examples", {"application/json": {"message": cls.example, "code": cls.code}})
    return response


def complete(schema: dict) -> dict:
    """`schema` (as flask-restx wrote it) with the scheme, integer ids and error responses."""
    schema = copy.deepcopy(schema)
    schema.setdefault("definitions", {})[ERROR_DEFINITION] = copy.deepcopy(ERROR_SCHEMA)
    schema.setdefault("securityDefinitions", copy.deepcopy(AUTHORIZATIONS))
    default_security = schema.get("security") or []
    for path, item in schema.get("paths", {}).items():
        shared = item.get("parameters", [])
        for parameter in shared:
            _type_id(parameter)
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            parameters = [*shared, *operation.get("parameters", [])]
            for parameter in operation.get("parameters", []):
                _type_id(parameter)
            if any(parameter.get("name") == "signature" for parameter in parameters):
                operation["security"] = []  # a signed media URL is its own credential
            secured = bool(operation.get("security", default_security))
            responses = operation.setdefault("responses", {})
            for status in _error_statuses(path, method, parameters, secured):
                responses.setdefault(str(status), {})
            for status in list(responses):
                if status.isdigit() and int(status) >= 400:
                    responses[status] = _error_response(int(status), responses[status])
    return schema


def docs_page(html: str) -> str:
    """flask-restx's Swagger UI page, whose requests carry a pasted token as `Bearer <token>`."""
    anchor = 'dom_id: "#swagger-ui",'
    if anchor not in html:  # a flask-restx whose page changed: the page still works with "Bearer <token>" typed
        log.warning("the Swagger UI page has no %r: a token pasted on it is sent without `Bearer `", anchor)
    return html.replace(anchor, _PREFIX_TOKEN, 1)
