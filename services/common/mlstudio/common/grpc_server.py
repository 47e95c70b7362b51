"""gRPC server bootstrap: health, reflection, request ids, error mapping, graceful stop.

`build_server` gives every service the same server: the standard `grpc.health.v1` service
(SERVING per registered service), reflection, and one interceptor that restores the request id
from metadata, logs failures, and turns domain errors into status codes (unknown errors become
INTERNAL with a generic message and a logged traceback), after one that counts and times the calls.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import errors, logs, metrics

log = logging.getLogger(__name__)


@dataclass
class Registration:
    """One servicer: the generated `add_XServicer_to_server`, the servicer, its full name."""

    add_to_server: Callable
    servicer: object
    service_name: str


def _abort_for(exc: Exception, context: grpc.ServicerContext, method: str):
    if isinstance(exc, errors.DomainError):
        if exc.http_status >= 500:
            log.warning("%s failed: %s", method, exc.message)
        context.set_trailing_metadata(((errors.ERROR_CODE_KEY, exc.code),))
        context.abort(exc.grpc_code, exc.message)
    log.exception("%s crashed", method)
    context.abort(grpc.StatusCode.INTERNAL, "internal error")


class ServiceInterceptor(grpc.ServerInterceptor):
    """Request id in, domain errors out, for unary and server-streaming methods."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        rid = dict(handler_call_details.invocation_metadata or ()).get(logs.REQUEST_ID_HEADER) or logs.new_request_id()

        if handler.unary_unary:
            inner = handler.unary_unary

            def unary_unary(request, context):
                token = logs.request_id.set(rid)
                try:
                    return inner(request, context)
                except grpc.RpcError:
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status here, on purpose
                    _abort_for(exc, context, method)
                finally:
                    logs.request_id.reset(token)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            def unary_stream(request, context):
                token = logs.request_id.set(rid)
                try:
                    yield from inner_stream(request, context)
                except grpc.RpcError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    _abort_for(exc, context, method)
                finally:
                    logs.request_id.reset(token)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


def build_server(port: int, registrations: Iterable[Registration], *, host: str = "127.0.0.1", max_workers: int = 16, max_message_mb: int = 64) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started-ready (not yet started) server with the servicers, health and reflection."""
    options = [
        ("grpc.max_receive_message_length", max_message_mb * 1024 * 1024),
        ("grpc.max_send_message_length", max_message_mb * 1024 * 1024),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=[metrics.GrpcMetricsInterceptor(), ServiceInterceptor()],
        options=options,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [health.SERVICE_NAME, reflection.SERVICE_NAME]
    for reg in registrations:
        reg.add_to_server(reg.servicer, server)
        health_servicer.set(reg.service_name, health_pb2.HealthCheckResponse.SERVING)
        names.append(reg.service_name)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port} (port in use?)")
    return server, bound, health_servicer
