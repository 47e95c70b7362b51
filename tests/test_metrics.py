"""Prometheus metrics of the running stack: each process's metrics port (loopback, not behind the
gateway) shows request, gRPC, job and prediction metrics that move when the API is used, and
Envoy's admin port its own stats."""
from __future__ import annotations

import fnmatch
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from test_training import BLUE, KERAS_SCRIPT, RED, colour_png

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of a metrics endpoint: (name, labels) -> value."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples, name: str, **labels) -> float:
    """The sum of `name` over the samples whose labels match `labels` (shell patterns)."""
    def matches(have: frozenset) -> bool:
        have = dict(have)
        return all(fnmatch.fnmatchcase(have.get(key, ""), want) for key, want in labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and matches(have))


def wait_for(condition, timeout_s: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not seen within {timeout_s} s: {what}"
        time.sleep(0.2)
    return result


def test_request_and_grpc_metrics_move_with_the_walk_through(stack, api, register):
    user_id, token = register(stack, f"metrics-{uuid.uuid4().hex[:8]}")
    session = api(stack, token)
    project_port, image_port = stack.ports["PROJECT_METRICS_PORT"], stack.ports["IMAGE_METRICS_PORT"]
    before, images_before = scrape(project_port), scrape(image_port)

    created = session.post("/projects/all", params={"user_id": user_id}, json={"title": "Counted", "type": "Classification"})
    assert created.status_code == 201
    project_id = created.json()["id"]
    assert session.get(f"/projects/{project_id}").status_code == 200
    assert session.get("/projects/987654321").status_code == 404
    files = [("files", ("red.png", colour_png(RED, 1)))]
    assert session.post("/images/red", params={"user_id": user_id, "project_id": project_id}, files=files).status_code == 201

    after, images_after = scrape(project_port), scrape(image_port)

    def moved(samples_after, samples_before, name, **labels):
        return total(samples_after, name, **labels) - total(samples_before, name, **labels)

    assert moved(after, before, "mlstudio_http_requests_total", route="/projects/all", method="POST", status="201") == 1
    assert moved(after, before, "mlstudio_http_requests_total", route="/projects/<int:project_id>", method="GET", status="200") == 1
    assert moved(after, before, "mlstudio_http_requests_total", route="/projects/<int:project_id>", method="GET", status="404") == 1
    assert moved(after, before, "mlstudio_http_request_duration_seconds_count", route="/projects/all", method="POST") == 1
    assert not any(dict(labels).get("route") == f"/projects/{project_id}" for _, labels in after)  # templates, not paths
    assert moved(images_after, images_before, "mlstudio_http_requests_total", route="/images/<string:tag>", method="POST", status="201") == 1
    # the image service asked the project service (gRPC) whether the project is the caller's
    assert moved(after, before, "mlstudio_grpc_server_handled_total", method="/mlstudio.project.v1.*", code="OK") >= 1


def test_metrics_are_not_reachable_through_the_gateway(stack, api):
    assert api(stack).get("/metrics").status_code in (401, 404)


def test_envoy_serves_its_own_stats_for_prometheus(stack, api):
    api(stack).get("/users/.well-known/jwks.json")
    text = requests.get(f"http://127.0.0.1:{stack.ports['ENVOY_ADMIN_PORT']}/stats/prometheus", timeout=10).text
    assert "envoy_cluster_upstream_rq" in text and "envoy_http_downstream_rq_total" in text


def test_job_queue_and_prediction_metrics_move_with_a_training(stack, api, register):
    user_id, token = register(stack, f"metrics-{uuid.uuid4().hex[:8]}")
    session = api(stack, token)
    params = {"user_id": user_id}
    project_id = session.post("/projects/all", params=params, json={"title": "Jobs", "type": "Classification"}).json()["id"]
    params["project_id"] = project_id
    for tag, rgb in (("red", RED), ("blue", BLUE)):
        files = [("files", (f"{tag}{i}.png", colour_png(rgb, i))) for i in range(12)]
        assert session.post(f"/images/{tag}", params=params, files=files).status_code == 201
    model_port, trainer_port = stack.ports["MODEL_METRICS_PORT"], stack.ports["MODEL_TRAINER_METRICS_PORT"]
    trainer_before = scrape(trainer_port)

    created = session.post("/models/all", params={**params, "method": "create"},
                           data={"title": "counted", "epochs": "1", "image_size": "32"},
                           files=[("files", ("train.py", KERAS_SCRIPT.encode()))])
    assert created.status_code in (200, 201), created.text
    model_id = created.json()["id"]
    # while it waits or runs (the sandbox alone takes seconds to start TensorFlow), the training
    # queue shows it: counted in MongoDB at scrape time
    wait_for(lambda: total(scrape(model_port), "mlstudio_jobs", queue="trainings", kind="train_model") >= 1, what="the training queued")
    assert total(scrape(model_port), "mlstudio_jobs_oldest_age_seconds", queue="trainings") >= 0
    wait_for(lambda: session.get(f"/models/{model_id}").json()["status"] in ("Trained", "Failed"), timeout_s=420, what="trained")
    model = session.get(f"/models/{model_id}").json()
    assert model["status"] == "Trained", model.get("error")
    # The model reads Trained a moment before its job ends (the trainer queues the held-out
    # evaluation after registering it): the job's outcome is counted once it has.
    done_before = total(trainer_before, "mlstudio_job_duration_seconds_count", outcome="done")
    wait_for(lambda: total(scrape(trainer_port), "mlstudio_job_duration_seconds_count", outcome="done") > done_before,
             what="the training job counted done")
    assert total(scrape(trainer_port), "mlstudio_job_duration_seconds_count", outcome="done") - done_before == 1

    # the evaluation of its held-out images predicts too (in the background): counted before ours
    wait_for(lambda: session.get(f"/models/{model_id}/evaluation").json().get("status") in ("Done", "Failed"), timeout_s=120,
             what="the held-out evaluation")
    predicted_before = total(scrape(model_port), "mlstudio_predicted_images_total", model=str(model_id))
    files = [("files", (f"p{i}.png", colour_png(BLUE, 50 + i))) for i in range(3)]
    assert session.post("/images/predict", params=params, data={"model_id": str(model_id)}, files=files).status_code == 201
    model_after = scrape(model_port)
    assert total(model_after, "mlstudio_predicted_images_total", model=str(model_id)) - predicted_before == 3
    assert total(model_after, "mlstudio_prediction_duration_seconds_count", model=str(model_id), type="Classification") >= 1
    assert total(model_after, "mlstudio_grpc_server_handled_total", method="/mlstudio.model.v1.*Classify*", code="OK") >= 1
