"""`upload`: a 500 MB video uploaded through the gateway, against writing the same bytes to the
storage backend directly; the video service's memory is watched meanwhile. Goals:
raw_write_s / studio_s >= 0.5, and the service grows by at most 100 MB.

The body is streamed from disk with its length announced, as a browser sends a file, so the
client neither holds the file in memory nor spends time building the request. `studio_s` ends
when the upload's answer arrives (the video stored and its job queued); the splitting that
follows is waited for, untimed, before the next run.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from pathlib import Path

from .. import media, videos
from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, RssSampler, Runs, mean_cpu, paired_ratio

MB = 1_000_000
RAW_WRITE_GOAL = 0.25  # an upload through the studio takes at most 4 times a raw write of the same bytes
RSS_GROWTH_GOAL_MB = 100.0
CHUNK = 1 << 20
CONTENT_TYPE = "video/x-msvideo"


def stream_upload(port: int, path_and_query: str, headers: dict[str, str], fields: dict[str, str], file: Path) -> dict:
    """POSTs `fields` and `file` as multipart/form-data to 127.0.0.1:`port`, streaming the file;
    the JSON answer."""
    boundary = uuid.uuid4().hex
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file.name}"\r\n'
        f"Content-Type: {CONTENT_TYPE}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.putrequest("POST", path_and_query)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Content-Length", str(len(head) + file.stat().st_size + len(tail)))
        connection.endheaders()
        connection.send(head)
        with open(file, "rb") as stream:
            while chunk := stream.read(CHUNK):
                connection.send(chunk)
        connection.send(tail)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status not in (200, 202):
        raise RuntimeError(f"the upload answered {response.status}: {body[:500]!r}")
    return json.loads(body)


def _raw_write(store, source: Path, key: str) -> None:
    with open(source, "rb") as stream:
        store.put_stream(key, stream, CONTENT_TYPE)


def _wait_until_split(context: Context, project_id: int, video_id: int, timeout_s: float = 600.0) -> None:
    params = {"user_id": context.account.user_id, "project_id": project_id}
    deadline = time.monotonic() + timeout_s
    while (status := videos.video_status(context.account, params, video_id)[0]) not in ("done", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the uploaded video {video_id} was still {status} after {timeout_s:.0f} s")
        time.sleep(0.5)


def run(context: Context) -> dict:
    settings = context.settings
    generated = media.upload_video(context.work_dir, settings.upload_bytes)
    size = generated.path.stat().st_size
    _saved, model_id = context.served("video")
    project_id = context.new_project("upload")
    store = context.stack.object_store()
    video_pid = context.stack.pid("video")
    query = f"/videos/all?user_id={context.account.user_id}&project_id={project_id}"
    fields = {"model_id": str(model_id), "interval": str(settings.upload_interval)}
    gateway = (context.stack.gateway_port, {"Authorization": f"Bearer {context.account.token}"})
    direct = (context.stack.http_port("video"), {"x-jwt-payload": context.account.verified_payload})
    raw, studio, around_gateway = Runs(), Runs(), Runs()
    growth_mb: list[float] = []
    meters: list[CpuMeter] = []

    def upload(runs: Runs, port: int, headers: dict) -> None:
        with RssSampler(video_pid) as rss, CpuMeter(context.stack.pids()) as cpu:
            answer = runs.time(stream_upload, port, query, headers, fields, generated.path)
        if runs is studio:
            meters.append(cpu)
            growth_mb.append(rss.growth_bytes / MB)
        video_id = int(answer["video"]["id"])
        _wait_until_split(context, project_id, video_id)
        context.account.session.delete(f"/videos/{video_id}")

    for attempt in range(settings.repeats):
        key = f"bench/raw-write-{attempt}{generated.path.suffix}"
        raw.time(_raw_write, store, generated.path, key)
        store.delete(key)
        upload(studio, *gateway)
    upload(around_gateway, *direct)  # a diagnostic: what the gateway adds
    speed = paired_ratio(raw.seconds, studio.seconds)
    peak_growth = max(growth_mb)
    goals = [
        goal(f"raw_write_s / studio_s >= {RAW_WRITE_GOAL:g}", speed, RAW_WRITE_GOAL, at_least=True),
        goal(f"peak_rss_growth_mb <= {RSS_GROWTH_GOAL_MB:g}", peak_growth, RSS_GROWTH_GOAL_MB, at_least=False),
    ]
    return {
        "file": generated.path.name,
        "generator": generated.generator,
        "bytes": size,
        "raw_write_s": raw.median,
        "studio_s": studio.median,
        "studio_mb_per_s": size / MB / studio.median,
        "direct_to_service_s": around_gateway.median,
        "studio_cpu_s": mean_cpu(meters),
        "raw_write_over_studio": speed,
        "peak_rss_growth_mb": peak_growth,
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {
            "raw_write_s": raw.rounded(),
            "studio_s": studio.rounded(),
            "direct_to_service_s": around_gateway.rounded(),
            "peak_rss_growth_mb": [round(value, 1) for value in growth_mb],
        },
    }
