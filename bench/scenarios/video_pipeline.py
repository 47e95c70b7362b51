"""`video_pipeline`: the shared bottle video (every 10th frame, a 64x64 CNN) split the original
backend's way, by decoding alone, and by the studio. Goal: seed_style_s / studio_s >= 10."""

from __future__ import annotations

import pymongo

from .. import media, videos
from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, Runs, mean_cpu, median_of, paired_ratio

VIDEO = "bottle-detection.mp4"
SPEEDUP_GOAL = 10.0


def run(context: Context) -> dict:
    path = media.shared_video(VIDEO)
    interval = context.settings.video_interval
    saved, model_id = context.served("video")
    project_id = context.new_project("video pipeline")
    records = pymongo.MongoClient("127.0.0.1", context.stack.mongo_port, directConnection=True)["bench_seed_style"][
        "images"
    ]
    decode, seed, studio = Runs(), Runs(), Runs()
    studio_runs: list[videos.StudioRun] = []
    meters: list[CpuMeter] = []
    frames = labelled = 0
    for attempt in range(context.settings.repeats):
        frames = decode.time(videos.decode_only, path)
        frames_dir = context.scratch_dir / f"seed-frames-{attempt}"
        labelled = seed.time(
            videos.seed_style, path, saved.model_file, saved.labels, saved.size, interval, frames_dir, records
        )
        with CpuMeter(context.stack.pids()) as cpu:
            studio_runs.append(videos.studio(context.account, project_id, model_id, path, interval))
        meters.append(cpu)
        studio.seconds.append(studio_runs[-1].done_s)
    typical = median_of(studio_runs, key=lambda item: item.done_s)
    speedup = paired_ratio(seed.seconds, studio.seconds)
    goals = [goal(f"seed_style_s / studio_s >= {SPEEDUP_GOAL:g}", speedup, SPEEDUP_GOAL, at_least=True)]
    return {
        "video": VIDEO,
        "interval": interval,
        "frames": frames,
        "sampled": typical.images,
        "seed_style_labelled": labelled,
        "seed_style_method": "keras load_model, read() every frame, model.predict per sampled frame, "
        "cv2.imwrite and one MongoDB insert_one per sampled frame",
        "seed_style_s": seed.median,
        "decode_only_s": decode.median,
        "studio_s": typical.done_s,
        "studio_upload_s": typical.uploaded_s,
        "studio_queued_s": typical.queued_s,
        "studio_processing_s": typical.processing_s,
        "studio_cpu_s": mean_cpu(meters),
        "speedup": speedup,
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {"seed_style_s": seed.rounded(), "decode_only_s": decode.rounded(), "studio_s": studio.rounded()},
    }
