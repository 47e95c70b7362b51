"""Renders the gateway's Envoy configuration from its one template, for every environment.

The local stack, docker compose and Kubernetes run the same gateway: the same routes, filters,
limits and timeouts; only addresses differ. Envoy's YAML cannot compute anything, so the
template (`envoy.yaml.j2`) holds the shape and a `GatewayConfig` the values. The launcher
renders it in-process; compose and Kubernetes get a file from

    python -m gateway.render --env compose -o envoy.yaml

The tests validate every rendering with the real `envoy --mode validate`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import jinja2

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30

# The public path prefix of each service, in the order the gateway lists them.
ROUTE_PREFIXES: Mapping[str, str] = {
    "user": "/users",
    "project": "/projects",
    "video": "/videos",
    "image": "/images",
    "model": "/models",
}
SERVICES = tuple(ROUTE_PREFIXES)
# Media behind signed URLs (`<img src>`, `<video src>` send no token); the service checks the
# signature in the query string.
MEDIA_FILE_SERVICES = ("image", "video")
# A model's evaluation charts (`/models/<id>/evaluation[/<project id>]/file`) are media too.
MEDIA_FILE_REGEX = r"^/((images|videos|models)/[0-9]+|models/[0-9]+/evaluation(/[0-9]+)?|projects/[0-9]+/exports/[0-9]+)/file$"
# Dataset exports, imports and near-duplicates of a project are the image service's (it owns the
# images and the zips), though their paths sit under the project service's prefix: these regex
# routes come first.
EXPORTS_REGEX = r"^/projects/[0-9]+/((exports|imports|relabels)(/[0-9]+)?|relabels/[0-9]+/cancel|duplicates)$"
EXPORT_FILE_REGEX = r"^/projects/[0-9]+/exports/[0-9]+/file$"
IMPORT_UPLOAD_REGEX = r"^/projects/[0-9]+/imports$"
JWKS_PATH = "/users/.well-known/jwks.json"
JWT_ISSUER = "mlstudio"
PAYLOAD_HEADER = "x-jwt-payload"
DEFAULT_CORS_ORIGINS = ("http://localhost:3000", "http://localhost:8000")
# HTTP ports of the services in the local stack (deploy/local/registry.py has the same defaults).
LOCAL_HTTP_PORTS: Mapping[str, int] = {"user": 8101, "project": 8102, "image": 8103, "model": 8104, "video": 8105}

TEMPLATE = Path(__file__).with_name("envoy.yaml.j2")
# The whole public API in one OpenAPI document, served by the gateway itself at OPENAPI_PATH
# (written from the services' own documents by `make docs`: deploy/openapi_doc.py).
OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")
OPENAPI_PATH = "/docs/openapi.json"
STATS_PORT = 9464  # every process's metrics port in compose and Kubernetes (METRICS_PORT)


@dataclasses.dataclass(frozen=True)
class Upstream:
    """Where a service's HTTP port is reachable from the gateway."""

    host: str
    http_port: int


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """Every value of the gateway's configuration; the template holds the rest."""

    upstreams: Mapping[str, Upstream]
    listen_address: str = "127.0.0.1"
    listen_port: int = 8000
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    # A listener that serves only the admin's /stats/prometheus, for Prometheus in compose and
    # Kubernetes (the admin port itself stays on loopback: it can also stop Envoy); 0: none.
    stats_port: int = 0
    auth_required: bool = True
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    json_body_limit: int = 1 * MiB
    image_upload_limit: int = 256 * MiB
    video_upload_limit: int = 2 * GiB
    model_upload_limit: int = 2 * GiB
    route_timeout_s: int = 60
    upload_timeout_s: int = 3600
    stream_idle_timeout_s: int = 300
    jwks_cache_s: int = 300
    # Tolerance for clock differences when checking a token's exp and nbf (Envoy's default is 60).
    jwt_clock_skew_s: int = 30

    def __post_init__(self):
        unknown = set(self.upstreams) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; the gateway knows {list(SERVICES)}")
        if "user" not in self.upstreams:
            raise ValueError("the gateway needs the user service: it serves the JWKS that verifies tokens")


@dataclasses.dataclass(frozen=True)
class UploadRoute:
    """A POST whose body may exceed the JSON limit; the path ends with "/" when it is a prefix,
    and starts with "^" when it is a regex."""

    service: str
    path: str
    limit: int
    name: str = ""  # of its routes (default: the service's)

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.service)

    @property
    def is_prefix(self) -> bool:
        return self.path.endswith("/")

    @property
    def is_regex(self) -> bool:
        return self.path.startswith("^")


def upload_routes(config: GatewayConfig) -> list[UploadRoute]:
    """The upload routes of the deployed services."""
    routes = [
        UploadRoute("video", "/videos/all", config.video_upload_limit),
        UploadRoute("model", "/models/all", config.model_upload_limit),
        UploadRoute("image", "/images/", config.image_upload_limit),
        # Dataset zips share the image upload limit (MAX_IMAGE_UPLOAD_BYTES, the service's too).
        UploadRoute("image", IMPORT_UPLOAD_REGEX, config.image_upload_limit, name="image-import"),
    ]
    return [route for route in routes if route.service in config.upstreams]


def _digits(low: int, high: int) -> str:
    return str(low) if low == high else f"[{low}-{high}]"


def greater_than_regex(n: int) -> str:
    """A regex (RE2 and Python syntax, meant for a full match) of the decimal integers > n.

    Envoy can only cap a body by buffering it, which 2 GiB uploads must not be; matching the
    `content-length` header against this regex lets a route refuse a large body before a byte
    of it is read. Leading zeros are allowed, as HTTP allows them."""
    if n < 0:
        raise ValueError("n must be >= 0")
    text = str(n)
    width = len(text)
    alternatives = [f"[1-9][0-9]{{{width},}}"]  # more digits than n
    for i, char in enumerate(text):  # as many digits: equal up to i, greater at i
        digit = int(char)
        if digit == 9:
            continue
        rest = width - i - 1
        tail = "" if rest == 0 else "[0-9]" if rest == 1 else f"[0-9]{{{rest}}}"
        alternatives.append(text[:i] + _digits(digit + 1, 9) + tail)
    return "0*(?:" + "|".join(alternatives) + ")"


def _service_view(name: str, upstream: Upstream) -> dict:
    return {"name": name, "prefix": ROUTE_PREFIXES[name], "host": upstream.host, "port": upstream.http_port}


def render(config: GatewayConfig) -> str:
    """The Envoy bootstrap YAML for `config`."""
    if not config.auth_required:
        log.warning("AUTH_REQUIRED=false: the gateway lets requests without a token through; "
                    "services take the caller from ?user_id=. Use only on a trusted network.")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    services = [_service_view(name, config.upstreams[name]) for name in SERVICES if name in config.upstreams]
    uploads = [
        {**dataclasses.asdict(route), "is_prefix": route.is_prefix, "is_regex": route.is_regex,
         "limit_regex": greater_than_regex(route.limit)}
        for route in upload_routes(config)
    ]
    openapi_body = json.dumps(json.loads(OPENAPI_DOCUMENT.read_text()), separators=(",", ":"), ensure_ascii=False)
    return environment.get_template(TEMPLATE.name).render(
        config=config,
        openapi_body=openapi_body,
        openapi_path=OPENAPI_PATH,
        # Envoy refuses direct responses over 4 KiB unless the route table allows more.
        direct_response_limit=max(4096, len(openapi_body.encode()) + 4096),
        services=services,
        uploads=uploads,
        media_services=[s for s in services if s["name"] in MEDIA_FILE_SERVICES],
        json_limit_regex=greater_than_regex(config.json_body_limit),
        media_file_regex=MEDIA_FILE_REGEX,
        exports_regex=EXPORTS_REGEX if "image" in config.upstreams else None,
        export_file_regex=EXPORT_FILE_REGEX,
        jwks_path=JWKS_PATH,
        issuer=JWT_ISSUER,
        payload_header=PAYLOAD_HEADER,
    )


def preset(env: str, **overrides) -> GatewayConfig:
    """The configuration of an environment: `local` (every process on 127.0.0.1 with the default
    ports), `compose` or `kubernetes` (services by DNS name on port 8080, listener on 0.0.0.0)."""
    if env == "local":
        upstreams = {name: Upstream("127.0.0.1", port) for name, port in LOCAL_HTTP_PORTS.items()}
        return GatewayConfig(upstreams=upstreams, **overrides)
    if env in ("compose", "kubernetes"):
        upstreams = {name: Upstream(name, 8080) for name in SERVICES}
        return GatewayConfig(upstreams=upstreams, listen_address="0.0.0.0", **{"stats_port": STATS_PORT, **overrides})
    raise ValueError(f"unknown environment {env!r}: local, compose or kubernetes")


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {raw!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.render", description="Renders the gateway's Envoy config.")
    parser.add_argument("--env", choices=("local", "compose", "kubernetes"), default="local")
    parser.add_argument("--auth-required", type=_bool, default=True, metavar="true|false")
    parser.add_argument("--cors-origins", default=",".join(DEFAULT_CORS_ORIGINS), help="comma-separated allowed origins")
    parser.add_argument("--upload-timeout-s", type=int, default=GatewayConfig.upload_timeout_s)
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="gateway.render: %(levelname)s: %(message)s")
    origins = tuple(origin.strip() for origin in args.cors_origins.split(",") if origin.strip())
    config = preset(args.env, auth_required=args.auth_required, cors_origins=origins, upload_timeout_s=args.upload_timeout_s)
    text = render(config)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
