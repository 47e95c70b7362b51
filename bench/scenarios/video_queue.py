"""`video_queue`: the shared bottle video (every 10th frame, the `video_pipeline` model) through
the studio alone, then five copies of it uploaded at once. A worker that took one video at a time
would take about five times as long for the five; job slots split several at once. Goal:
total_s <= 3 * single_s."""

from __future__ import annotations

import os

from .. import media, videos
from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, Runs, mean_cpu, median_of, paired_ratio

VIDEO = "bottle-detection.mp4"
COPIES = 5
QUEUE_GOAL = 3.0


def run(context: Context) -> dict:
    path = media.shared_video(VIDEO)
    interval = context.settings.video_interval
    _saved, model_id = context.served("video")
    single, total = Runs(), Runs()
    batches: list[list[videos.StudioRun]] = []
    meters: list[CpuMeter] = []
    for attempt in range(context.settings.repeats):
        # A project per pair: watching lists only this pair's videos.
        project_id = context.new_project(f"video queue {attempt}")
        single.seconds.append(videos.studio(context.account, project_id, model_id, path, interval).done_s)
        with CpuMeter(context.stack.pids()) as cpu:
            batch = videos.studio_queue(context.account, project_id, model_id, path, interval, COPIES)
        meters.append(cpu)
        batches.append(batch)
        total.seconds.append(batch[-1].done_s)
    typical = median_of(batches, key=lambda batch: batch[-1].done_s)
    ratio = paired_ratio(total.seconds, single.seconds)
    goals = [goal(f"total_s <= {QUEUE_GOAL:g} * single_s", ratio, QUEUE_GOAL, at_least=False)]
    return {
        "video": VIDEO,
        "interval": interval,
        "copies": COPIES,
        "job_slots": context.stack.stack.env.get("VIDEO_JOB_SLOTS") or f"default ({len(os.sched_getaffinity(0))} cores)",
        "single_s": single.median,
        "total_s": total.median,
        # Fairness: when each copy of the typical batch finished, and how long each was processed.
        "first_done_s": typical[0].done_s,
        "done_s": [run.done_s for run in typical],
        "started_s": sorted(run.started_s for run in typical),
        "processing_s": [run.processing_s for run in typical],
        "studio_cpu_s": mean_cpu(meters),
        "total_over_single": ratio,
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {"single_s": single.rounded(), "total_s": total.rounded()},
    }
