"""Flask + flask-restx application factory pieces shared by every service.

`make_app` gives a service its Flask app and flask-restx `Api` with: one error handler that
answers JSON `{"message", "code"}` for domain errors, HTTP errors and crashes; the request id
from the gateway; `<int:...>` path parts that only match ids (`ids.IdConverter`: 1 to 2^63 - 1,
else 404); a JSON 400 for paths with control characters (the gateway refuses them first, but a
service may be reached directly); `/healthz` (alive) and `/readyz` (dependencies reachable,
else 503); the OpenAPI docs under `/docs/<service>/`, which the gateway routes without a
token, completed by `openapi` (security scheme, integer ids, error responses); and request
counts and latencies by route template (`metrics`).
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping

from flask import Flask, Response, jsonify, request
from flask_restx import Api, apidoc
from werkzeug.exceptions import HTTPException

from . import auth, errors, ids, logs, metrics, openapi

log = logging.getLogger(__name__)


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def error_response(exc: Exception):
    """(body, status) for any exception raised while handling a request."""
    if isinstance(exc, errors.DomainError):
        if exc.http_status >= 500:
            log.warning("%s %s failed: %s", request.method, request.path, exc.message)
        return exc.to_json(), exc.http_status
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        if status == 413:
            return {"message": "the request body is too large", "code": "too_large"}, 413
        message = exc.description or exc.name
        if status == 404 and "requested URL was not found" in message:
            message = f"no such resource: {request.path}"
        return {"message": message, "code": _snake(exc.name)}, status
    log.exception("%s %s crashed", request.method, request.path)
    return {"message": "internal error", "code": "internal"}, 500


class DocumentedApi(Api):
    """flask-restx's Api whose OpenAPI document is completed by `openapi.complete`: the Bearer
    scheme, integer ids and the error responses of the shared error table."""

    _completed: dict | None = None

    @property
    def __schema__(self):
        schema = super().__schema__
        if "paths" not in schema:  # flask-restx's own "Unable to render schema"
            return schema
        if self._completed is None:
            self._completed = openapi.complete(schema)
        return self._completed


class ServiceFlask(Flask):
    """Flask whose crash logging is left to `error_response` (flask-restx would otherwise log a
    traceback for every expected 5xx, such as 503 when a dependency is down)."""

    def log_exception(self, exc_info) -> None:
        pass


def make_app(service: str, *, title: str, description: str, readiness: Mapping[str, Callable[[], bool]], max_body_bytes: int | None = None) -> tuple[Flask, Api]:
    """The service's Flask app and Api; add namespaces to the Api."""
    app = ServiceFlask(service)
    app.config["ERROR_404_HELP"] = False
    app.config["RESTX_MASK_SWAGGER"] = False
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    # Before any route is added: rules bind their converters when they are added.
    app.url_map.converters["int"] = ids.IdConverter
    metrics.instrument_flask(app)
    # The docs page's assets under the service's own /docs/<service>/ path, which the gateway
    # routes to this service, so a service that is down takes only its own page with it; the
    # shared /swaggerui/ path stays for links to it.
    app.register_blueprint(apidoc.apidoc, url_prefix=f"/docs/{service}")
    app.register_blueprint(apidoc.apidoc, name="restx_doc_shared")
    app.extensions.setdefault("restx", {})["apidoc_registered"] = True
    api = DocumentedApi(
        app,
        title=title,
        description=description,
        version="1.0",
        doc=f"/docs/{service}/",
        default_swagger_filename=f"docs/{service}/swagger.json",
        authorizations=openapi.AUTHORIZATIONS,
        security=openapi.SCHEME,
    )

    @api.documentation
    def _docs_page():
        return openapi.docs_page(apidoc.ui_for(api))

    @app.before_request
    def _request_id():
        logs.request_id.set(request.headers.get(logs.REQUEST_ID_HEADER) or logs.new_request_id())
        if _CONTROL_CHARACTER.search(request.path):
            # A NUL (%00) or another control character names no resource and must never reach
            # a tag, a storage key or a log line.
            raise errors.InvalidArgument("the request path contains a control character (such as an encoded NUL)", code="bad_path")

    def handle(exc):
        body, status = error_response(exc)
        return body, status

    api.errorhandler(Exception)(handle)

    @app.errorhandler(Exception)
    def _app_error(exc):
        body, status = error_response(exc)
        return jsonify(body), status

    @app.get("/healthz")
    def _healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def _readyz():
        results = {name: bool(check()) for name, check in readiness.items()}
        ready = all(results.values())
        return {"status": "ready" if ready else "unavailable", "checks": results}, 200 if ready else 503

    return app, api


def json_response(data, status: int = 200) -> Response:
    """`data` (dicts, lists and plain values, as built by a service's `public_*` functions) as a
    JSON response, serialized once. List routes answer through this rather than flask-restx's
    `marshal_with`, which builds a field object per value (most of a 50,000-image list's time);
    their models stay declared with `@ns.response` for the OpenAPI docs, and each service's tests
    check that its dicts are what marshalling with those models would give."""
    return Response(_dumps(data), status=status, mimetype="application/json")


def _dumps(data) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def body_fields() -> dict:
    """The request's fields from a JSON object body or a form; 400 for malformed JSON."""
    if request.mimetype == "application/json" or (request.data and not request.form and not request.files):
        raw = request.get_data(cache=True)
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise errors.InvalidArgument("the request body is not valid JSON", code="bad_json") from None
        if not isinstance(data, dict):
            raise errors.InvalidArgument("the request body must be a JSON object", code="bad_json")
        return data
    return request.form.to_dict()


def caller(auth_required: bool, owner_of: Callable[[], int] | None = None) -> int:
    """The calling user's id for this request (see `auth.caller_id`); routes that name one
    resource by its id pass `owner_of`, the look-up of that resource's owner."""
    return auth.caller_id(request.headers, request.args, auth_required, owner_of)
