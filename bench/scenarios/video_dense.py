"""`video_dense`: the shared bottle video with every frame kept (a 64x64 CNN labels each): the
studio against decoding and JPEG-encoding every frame in one process, the work the worker cannot
avoid. Goal: studio_s <= 2 * decode_encode_s."""

from __future__ import annotations

from .. import media, videos
from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, Runs, mean_cpu, median_of, paired_ratio

VIDEO = "bottle-detection.mp4"
OVERHEAD_GOAL = 2.0


def run(context: Context) -> dict:
    path = media.shared_video(VIDEO)
    _saved, model_id = context.served("video")
    project_id = context.new_project("video dense")
    baseline, studio = Runs(), Runs()
    studio_runs: list[videos.StudioRun] = []
    meters: list[CpuMeter] = []
    frames = 0
    for _ in range(context.settings.repeats):
        frames = baseline.time(videos.decode_encode, path)
        with CpuMeter(context.stack.pids()) as cpu:
            studio_runs.append(videos.studio(context.account, project_id, model_id, path, 1))
        meters.append(cpu)
        studio.seconds.append(studio_runs[-1].done_s)
    typical = median_of(studio_runs, key=lambda item: item.done_s)
    overhead = paired_ratio(studio.seconds, baseline.seconds)
    goals = [goal(f"studio_s <= {OVERHEAD_GOAL:g} * decode_encode_s", overhead, OVERHEAD_GOAL, at_least=False)]
    return {
        "video": VIDEO,
        "interval": 1,
        "frames": frames,
        "sampled": typical.images,
        "decode_encode_s": baseline.median,
        "studio_s": typical.done_s,
        "studio_upload_s": typical.uploaded_s,
        "studio_queued_s": typical.queued_s,
        "studio_processing_s": typical.processing_s,
        "studio_cpu_s": mean_cpu(meters),
        "studio_over_decode_encode": overhead,
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {"decode_encode_s": baseline.rounded(), "studio_s": studio.rounded()},
    }
