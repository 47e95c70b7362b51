"""`gateway`: `GET /projects/<id>` repeated by a few concurrent clients, straight to the project
service and through Envoy (JWT check included). Goal: Envoy adds at most 1 ms at p50.

The direct requests carry the `x-jwt-payload` header Envoy would have added, so the service does
the same work both ways. Clients keep their connections open (as browsers and the services'
clients do), and the two paths alternate in blocks so that a burst of other work on the machine
falls on both.
"""

from __future__ import annotations

import http.client
import threading
import time

from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, percentile

ADDED_P50_GOAL_MS = 1.0
WARM_UP_REQUESTS = 50
SINGLE_CLIENT_REQUESTS = 300  # a diagnostic: Envoy's latency without clients queueing for the CPUs


def _hammer(port: int, path: str, headers: dict, requests: int, clients: int) -> tuple[list[float], float]:
    """`requests` GETs spread over `clients` threads; (latencies in seconds, wall seconds)."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    share = [requests // clients + (1 if index < requests % clients else 0) for index in range(clients)]

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        try:
            for _ in range(count):
                started = time.perf_counter()
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                mine.append(time.perf_counter() - started)
                if response.status != 200:
                    failures.append(f"{response.status} {body[:200]!r}")
                    return
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(count,)) for count in share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"GET {path} on port {port} failed: {failures[0]}")
    return latencies, wall


def run(context: Context) -> dict:
    settings = context.settings
    account = context.account
    project_id = context.new_project("gateway")
    path = f"/projects/{project_id}"
    paths = {
        "direct": (context.stack.http_port("project"), {"x-jwt-payload": account.verified_payload}),
        "gateway": (context.stack.gateway_port, {"Authorization": f"Bearer {account.token}"}),
    }
    latencies = {name: [] for name in paths}
    wall = dict.fromkeys(paths, 0.0)
    cpu: dict[str, dict[str, float]] = {name: {} for name in paths}
    for port, headers in paths.values():
        _hammer(port, path, headers, WARM_UP_REQUESTS, settings.gateway_clients)
    block = settings.gateway_requests // settings.gateway_rounds
    for _ in range(settings.gateway_rounds):
        for name, (port, headers) in paths.items():
            with CpuMeter(context.stack.pids()) as meter:
                measured, seconds = _hammer(port, path, headers, block, settings.gateway_clients)
            latencies[name] += measured
            wall[name] += seconds
            for process, used in meter.used.items():
                cpu[name][process] = cpu[name].get(process, 0.0) + used
    result = {
        "requests": block * settings.gateway_rounds,
        "clients": settings.gateway_clients,
        "path": "/projects/<id>",
    }
    for name in paths:
        result[f"{name}_p50_ms"] = percentile(latencies[name], 0.50) * 1000
        result[f"{name}_p99_ms"] = percentile(latencies[name], 0.99) * 1000
        result[f"{name}_rps"] = len(latencies[name]) / wall[name]
    added = result["gateway_p50_ms"] - result["direct_p50_ms"]
    result["added_p50_ms"] = added
    result["cpu_ms_per_request"] = {
        name: {
            process: round(used * 1000 / len(latencies[name]), 3)
            for process, used in sorted(cpu[name].items(), key=lambda item: -item[1])
            if used * 1000 / len(latencies[name]) >= 0.005
        }
        for name in paths
    }
    for name, (port, headers) in paths.items():
        alone, _ = _hammer(port, path, headers, SINGLE_CLIENT_REQUESTS, 1)
        result[f"single_client_{name}_p50_ms"] = percentile(alone, 0.50) * 1000
    result["single_client_added_p50_ms"] = (
        result["single_client_gateway_p50_ms"] - result["single_client_direct_p50_ms"]
    )
    result["goals"] = [
        goal(f"gateway_p50_ms - direct_p50_ms <= {ADDED_P50_GOAL_MS:g}", added, ADDED_P50_GOAL_MS, at_least=False)
    ]
    result["goal_met"] = all_met(result["goals"])
    return result
