"""Prometheus metrics of every process, served on its own port (`METRICS_PORT`, loopback by
default) apart from the public gateway, with prometheus-client's default registry:

- HTTP requests by route template (`/projects/<int:project_id>`, never the raw path, so the
  number of series stays bounded), method and status, with latency histograms (`make_app`);
- gRPC calls by method and status code, with latency (an interceptor of `build_server`);
- jobs: how many wait or run and the age of the oldest waiting, read from MongoDB at scrape time
  (`watch_job_queue`, in the service that owns the queue), and each run's duration by kind and
  outcome (`jobs.Worker`);
- predictions per model, images and latency (the model service's inference path).

The process's own metrics (CPU, memory, open files) come with prometheus-client's defaults.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import grpc
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

# Request latencies from a cache hit (ms) to a model upload waiting for TF Serving (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Jobs: a short video in seconds, a training in up to hours.
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)
UNMATCHED_ROUTE = "<unmatched>"  # a path no route matched (a 404): one series for all of them

HTTP_REQUESTS = Counter("mlstudio_http_requests", "HTTP requests answered, by route template, method and status",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("mlstudio_http_request_duration_seconds", "Time to answer an HTTP request (until the body starts)",
                         ["route", "method"], buckets=LATENCY_BUCKETS)
GRPC_CALLS = Counter("mlstudio_grpc_server_handled", "gRPC calls handled, by method and status code", ["method", "code"])
GRPC_LATENCY = Histogram("mlstudio_grpc_server_handling_seconds", "Time to handle a gRPC call", ["method"], buckets=LATENCY_BUCKETS)
JOB_DURATION = Histogram("mlstudio_job_duration_seconds",
                         "Time a worker spent on a job, by kind and outcome (done, failed, crashed, cancelled, waiting, released, lease_lost)",
                         ["kind", "outcome"], buckets=JOB_BUCKETS)
PREDICTED_IMAGES = Counter("mlstudio_predicted_images", "Images a model predicted, by model id and model type", ["model", "type"])
PREDICTION_LATENCY = Histogram("mlstudio_prediction_duration_seconds", "Time of one prediction call (a batch of images) by model",
                               ["model", "type"], buckets=LATENCY_BUCKETS)


def serve(host: str, port: int) -> int | None:
    """Starts the metrics endpoint (`GET /metrics`) in a daemon thread; port 0: none."""
    if not port:
        return None
    server, _thread = start_http_server(port, addr=host)
    log.info("metrics", extra={"metrics": f"{host}:{server.server_port}"})
    return server.server_port


# ----- HTTP

def instrument_flask(app) -> None:
    """Counts and times every request of a Flask app by its route template."""
    from flask import g, request

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        started = g.pop("metrics_started", None)
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        if started is not None:
            HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        return response


# ----- gRPC

def _code_of(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code() if hasattr(context, "code") else None
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class GrpcMetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times unary and server-streaming calls; outermost, so it sees the status code
    the error-mapping interceptor set."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            inner = handler.unary_unary

            def unary_unary(request, context):
                started, failed = time.perf_counter(), True
                try:
                    answer = inner(request, context)
                    failed = False
                    return answer
                finally:
                    _observe_call(method, context, failed, started)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            def unary_stream(request, context):
                started, failed = time.perf_counter(), True
                try:
                    yield from inner_stream(request, context)
                    failed = False
                finally:
                    _observe_call(method, context, failed, started)

            return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer, handler.response_serializer)
        return handler


def _observe_call(method: str, context, failed: bool, started: float) -> None:
    GRPC_CALLS.labels(method, _code_of(context, failed)).inc()
    GRPC_LATENCY.labels(method).observe(time.perf_counter() - started)


# ----- jobs

class JobQueueCollector:
    """Jobs queued and running by kind, and the age of the oldest of each, counted in MongoDB
    when Prometheus scrapes (ages by the database server's clock, as the queue's own times)."""

    def __init__(self, queue: str, collection: Collection):
        self.queue = queue
        self.collection = collection

    def describe(self):
        return []  # collected at scrape time; not checked against other collectors at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        count = GaugeMetricFamily("mlstudio_jobs", "Jobs waiting (queued) or being worked on (running), by kind",
                                  labels=["queue", "kind", "status"])
        age = GaugeMetricFamily("mlstudio_jobs_oldest_age_seconds", "Age of the oldest queued or running job, by kind",
                                labels=["queue", "kind", "status"])
        try:
            groups = self.collection.aggregate([
                {"$match": {"status": {"$in": ["queued", "running"]}}},
                {"$group": {"_id": {"kind": "$kind", "status": "$status"}, "count": {"$sum": 1}, "oldest": {"$min": "$created"}}},
                {"$project": {"count": 1, "age_ms": {"$subtract": ["$$NOW", {"$ifNull": ["$oldest", "$$NOW"]}]}}},
            ], maxTimeMS=2000)
            for group in groups:
                labels = [self.queue, str(group["_id"].get("kind")), str(group["_id"].get("status"))]
                count.add_metric(labels, group["count"])
                age.add_metric(labels, max(0.0, group["age_ms"] / 1000.0))
        except PyMongoError as exc:  # a scrape while MongoDB is away shows no queue, not an error page
            log.warning("metrics: cannot count the %s jobs: %s", self.queue, exc)
        yield count
        yield age


def watch_job_queue(queue: str, collection: Collection, registry=REGISTRY) -> JobQueueCollector:
    """Exports the depth and age of a service's job queue (call once per process)."""
    collector = JobQueueCollector(queue, collection)
    registry.register(collector)
    return collector


def observe_job(kind: str, outcome: str, seconds: float) -> None:
    JOB_DURATION.labels(kind, outcome).observe(seconds)


# ----- predictions

class prediction_timer:
    """`with prediction_timer(model_id, model_type, images):` counts the images and times the call."""

    def __init__(self, model_id, model_type: str | None, images: int):
        self.labels = (str(model_id), model_type or "unknown")
        self.images = images

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            PREDICTED_IMAGES.labels(*self.labels).inc(self.images)
            PREDICTION_LATENCY.labels(*self.labels).observe(time.perf_counter() - self.started)
