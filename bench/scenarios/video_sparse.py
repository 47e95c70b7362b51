"""`video_sparse`: a generated 1080p, 30 fps, 60 s H.264 video, one frame in 30 kept: the studio
should cost little more than decoding. Goal: studio_s <= 1.3 * decode_only_s."""

from __future__ import annotations

from .. import media, videos
from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, Runs, mean_cpu, median_of, paired_ratio

OVERHEAD_GOAL = 1.3


def run(context: Context) -> dict:
    settings = context.settings
    generated = media.sparse_video(context.work_dir, seconds=settings.sparse_seconds)
    _saved, model_id = context.served("video")
    project_id = context.new_project("video sparse")
    decode, studio = Runs(), Runs()
    studio_runs: list[videos.StudioRun] = []
    meters: list[CpuMeter] = []
    frames = 0
    for _ in range(settings.repeats):
        frames = decode.time(videos.decode_only, generated.path)
        with CpuMeter(context.stack.pids()) as cpu:
            studio_runs.append(
                videos.studio(context.account, project_id, model_id, generated.path, settings.sparse_interval)
            )
        meters.append(cpu)
        studio.seconds.append(studio_runs[-1].done_s)
    typical = median_of(studio_runs, key=lambda item: item.done_s)
    overhead = paired_ratio(studio.seconds, decode.seconds)
    goals = [goal(f"studio_s <= {OVERHEAD_GOAL:g} * decode_only_s", overhead, OVERHEAD_GOAL, at_least=False)]
    return {
        "video": generated.path.name,
        "generator": generated.generator,
        "bytes": generated.path.stat().st_size,
        "interval": settings.sparse_interval,
        "frames": frames,
        "sampled": typical.images,
        "decode_only_s": decode.median,
        "studio_s": typical.done_s,
        "studio_upload_s": typical.uploaded_s,
        "studio_queued_s": typical.queued_s,
        "studio_processing_s": typical.processing_s,
        "studio_cpu_s": mean_cpu(meters),
        "studio_over_decode": overhead,
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {"decode_only_s": decode.rounded(), "studio_s": studio.rounded()},
    }
