"""`detector_video`: the shared street video (every 4th frame) through the built-in COCO detector
(NanoDet-m), by the studio (a video upload to a Detection project: decode, JPEG, Detect through
TF Serving, store every frame with its boxes) and by the same SavedModel in this process
(decode, resize keeping the aspect ratio as the studio does, batches of 32). Keys (issue 18):
`studio_frames_per_s`, `in_process_frames_per_s`; goal: their ratio >= 0.8, the median of the
ratios of runs made one after the other.

Both sides start from the video file, so decoding counts on both; the in-process side stores
nothing. The detector is warmed up with one batch first on both sides (its graph is traced on the
first call), so the figures are steady-state detection."""

from __future__ import annotations

import time

from .. import media, videos
from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, Runs, mean_cpu, median_of, paired_ratio

VIDEO = "car-detection.mp4"
INTERVAL = 4
BATCH = 32
EFFICIENCY_GOAL = 0.8
DETECTOR = "COCO objects (NanoDet-m)"


def _frames(path, interval: int, longest: int):
    """The sampled frames as RGB uint8, longer side `longest`, aspect ratio kept."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % interval == 0:
            scale = longest / max(frame.shape[:2])
            size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
            frames.append(cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    return frames


def run(context: Context) -> dict:
    import numpy as np
    import tensorflow as tf

    from model_service.pretrained import catalog

    path = media.shared_video(VIDEO)
    project_id = context.account.new_project("Detection", "bench detector")
    params = {"user_id": context.account.user_id, "project_id": project_id}
    listed = context.account.session.get("/models/all", params=params)
    model_id = next(m["id"] for m in listed.json() if m["title"] == DETECTOR and m.get("builtin"))
    longest = max(catalog.COCO_NANODET.input_shape[:2])
    saved_model = catalog.model_dir(catalog.COCO_NANODET, catalog.default_cache()) / "saved_model"
    detector = tf.saved_model.load(str(saved_model))
    serve = detector.signatures["serving_default"]

    def in_process() -> int:
        frames = _frames(path, INTERVAL, longest)
        for start in range(0, len(frames), BATCH):
            serve(images=tf.constant(np.stack(frames[start : start + BATCH])))
        return len(frames)

    serve(images=tf.constant(np.stack(_frames(path, 60, longest))))  # warm-up: traces the graph
    videos.studio(context.account, project_id, model_id, path, 60)  # the studio's warm-up
    local, studio = Runs(), Runs()
    studio_runs: list[videos.StudioRun] = []
    meters: list[CpuMeter] = []
    frames = 0
    for _ in range(min(context.settings.repeats, 3)):
        started = time.perf_counter()
        frames = in_process()
        local.seconds.append(time.perf_counter() - started)
        with CpuMeter(context.stack.pids()) as cpu:
            studio_runs.append(videos.studio(context.account, project_id, model_id, path, INTERVAL))
        meters.append(cpu)
        studio.seconds.append(studio_runs[-1].done_s)
    typical = median_of(studio_runs, key=lambda item: item.done_s)
    in_process_fps = frames / local.median
    studio_fps = typical.images / typical.done_s
    ratio = paired_ratio([run.images / run.done_s for run in studio_runs],
                         [frames / seconds for seconds in local.seconds])
    goals = [goal(f"studio_frames_per_s / in_process_frames_per_s >= {EFFICIENCY_GOAL:g}", ratio, EFFICIENCY_GOAL,
                  at_least=True)]
    return {
        "video": VIDEO,
        "interval": INTERVAL,
        "frames": frames,
        "sampled": typical.images,
        "in_process_s": local.median,
        "studio_s": typical.done_s,
        "in_process_frames_per_s": in_process_fps,
        "studio_frames_per_s": studio_fps,
        "studio_upload_s": typical.uploaded_s,
        "studio_queued_s": typical.queued_s,
        "studio_processing_s": typical.processing_s,
        "studio_cpu_s": mean_cpu(meters),
        "studio_over_in_process": ratio,
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {"in_process_s": local.rounded(), "studio_s": studio.rounded()},
    }
