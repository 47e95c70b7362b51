"""Writes a benchmark run's results: `latest.json` (every figure), `latest.md` (a table for
people and docs/performance.md) and `latest.png` (a chart of where the time goes).

Works from the result dict alone, so a scenario that failed (it has an `error` instead of
figures) still gets its row, saying so. `python -m bench.report <results.json> [<dir>]` writes
the table and chart again from a results file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCENARIOS = (
    "footprint",  # first: the stack as it starts
    "video_pipeline", "video_sparse", "video_dense", "video_queue", "predict", "gateway", "upload", "export", "detector_video", "fewshot_training",
    "list_images", "predict_concurrent",
)
# What each scenario's figures are, for the table: (key, label, unit).
FIGURES = {
    "video_pipeline": (
        ("seed_style_s", "seed-style", "s"),
        ("decode_only_s", "decode only", "s"),
        ("studio_s", "studio", "s"),
        ("frames", "frames", ""),
        ("sampled", "sampled", ""),
    ),
    "video_sparse": (
        ("decode_only_s", "decode only", "s"),
        ("studio_s", "studio", "s"),
        ("frames", "frames", ""),
        ("sampled", "sampled", ""),
    ),
    "video_dense": (
        ("decode_encode_s", "decode and encode", "s"),
        ("studio_s", "studio", "s"),
        ("frames", "frames", ""),
        ("sampled", "stored", ""),
    ),
    "predict": (
        ("in_process_s", "in-process Keras", "s"),
        ("studio_s", "studio Classify", "s"),
        ("images", "images", ""),
    ),
    "gateway": (
        ("direct_p50_ms", "direct p50", "ms"),
        ("gateway_p50_ms", "gateway p50", "ms"),
        ("direct_p99_ms", "direct p99", "ms"),
        ("gateway_p99_ms", "gateway p99", "ms"),
        ("direct_rps", "direct", "req/s"),
        ("gateway_rps", "gateway", "req/s"),
    ),
    "upload": (
        ("raw_write_s", "raw write", "s"),
        ("studio_s", "studio", "s"),
        ("peak_rss_growth_mb", "video service RSS growth", "MB"),
        ("bytes", "bytes", ""),
    ),
    "export": (
        ("small_studio_s", "small project", "s"),
        ("studio_s", "large project", "s"),
        ("small_peak_rss_growth_mb", "image service RSS growth (small)", "MB"),
        ("peak_rss_growth_mb", "image service RSS growth (large)", "MB"),
        ("images", "images", ""),
    ),
    "detector_video": (
        ("in_process_frames_per_s", "in-process NanoDet", "frames/s"),
        ("studio_frames_per_s", "studio video", "frames/s"),
        ("sampled", "frames", ""),
    ),
    "fewshot_training": (
        ("transfer_accuracy", "transfer accuracy", ""),
        ("scratch_accuracy", "scratch accuracy", ""),
        ("transfer_train_s", "transfer training", "s"),
        ("transfer_cpu_s", "transfer CPU", "s"),
        ("scratch_train_s", "scratch training", "s"),
        ("transfer_retrain_s", "transfer retraining (cached features)", "s"),
        ("studio_train_s", "studio: create to Trained", "s"),
        ("studio_transfer_accuracy", "studio accuracy", ""),
        ("train_images", "training images", ""),
        ("classes", "classes", ""),
    ),
}
FIGURES["list_images"] = (
    ("mongo_read_s", "MongoDB read", "s"),
    ("studio_s", "studio list", "s"),
    ("deep_offset_page_ms", "deep page by offset", "ms"),
    ("deep_after_id_page_ms", "by after_id", "ms"),
    ("tag_summary_ms", "tag summary", "ms"),
    ("images", "images", ""),
)
FIGURES["video_queue"] = (
    ("single_s", "one video", "s"),
    ("total_s", "five at once", "s"),
    ("first_done_s", "first of the five done", "s"),
    ("copies", "videos", ""),
)
FIGURES["footprint"] = (("idle_rss_mb", "whole stack idle", "MB"),)
FIGURES["predict_concurrent"] = (
    ("in_process_images_per_s", "in-process Keras (batch 64)", "images/s"),
    ("studio_images_per_s", "studio, 16 clients x 8 images", "images/s"),
    ("images", "images", ""),
)
BASELINE, STUDIO, QUEUED, UPLOADING, MET, MISSED = "#9e9e9e", "#1f77b4", "#ff7f0e", "#aec7e8", "#2ca02c", "#d62728"


def write_all(results: dict, directory: Path, stem: str = "latest") -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / f"{stem}.json", "md": directory / f"{stem}.md", "png": directory / f"{stem}.png"}
    paths["json"].write_text(json.dumps(rounded(results), indent=2) + "\n")
    paths["md"].write_text(markdown(results))
    chart(results, paths["png"])
    return paths


def rounded(value, digits: int = 4):
    """`value` with its floats rounded (the JSON is read by people too)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item, digits) for item in value]
    return value


def _number(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) or unit == "":
        return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"
    if unit == "req/s":
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def _held(met) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def markdown(results: dict) -> str:
    machine = results.get("machine", {})
    lines = [
        "| scenario | figures | goal | value | held |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in SCENARIOS:
        scenario = results.get("scenarios", {}).get(name)
        if scenario is None:
            continue
        if scenario.get("error"):
            lines.append(f"| {name} | failed: {_cell(scenario['error'])} | | | n/a |")
            continue
        figures = ", ".join(
            f"{label} {_number(scenario.get(key), unit)}" for key, label, unit in FIGURES[name] if key in scenario
        )
        for index, item in enumerate(scenario.get("goals", [])):
            first = index == 0
            lines.append(
                f"| {name if first else ''} | {figures if first else ''} | `{item['goal']}` | "
                f"{_number(item['value'], '')} | {_held(item['met'])} |"
            )
    load = machine.get("loadavg_start")
    header = (
        f"Measured {results.get('started_at', '?')} on {machine.get('cpus', '?')} CPUs "
        f"(load average at start {load[0] if load else '?'}, at end {(machine.get('loadavg_end') or ['?'])[0]}), "
        f"commit {results.get('commit', '?')}, in {results.get('duration_s', 0):.0f} s. "
        f"Times are the median of {results.get('settings', {}).get('repeats', '?')} runs; ratios the median of the "
        f"ratios of runs made one after the other."
    )
    return header + "\n\n" + "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:200]


# ----- the chart ---------------------------------------------------------------------------


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = results.get("scenarios", {})
    names = [name for name in SCENARIOS if name in scenarios]  # a run of some (--only) draws only those
    figure, axes = plt.subplots(len(names) + 1, 1, figsize=(10, 2.1 * (len(names) + 1) + 0.6), squeeze=False)
    axes = axes[:, 0]
    _cpu_shares(axes[-1], scenarios)
    for axis, name in zip(axes[:-1], names, strict=True):
        scenario = scenarios[name]
        if scenario.get("error"):
            axis.set_axis_off()
            axis.set_title(f"{name}: failed", loc="left", fontsize=10, color=MISSED)
            continue
        PANELS[name](axis, scenario)
        _goal_title(axis, name, scenario)
    figure.suptitle("ML Studio benchmarks: where the time goes (median runs, shorter is better)", fontsize=12)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _goal_title(axis, name: str, scenario: dict) -> None:
    goals = scenario.get("goals", [])
    words = "; ".join(f"{item['goal']}: {item['value']} {'held' if item['met'] else 'MISSED'}" for item in goals)
    color = MET if scenario.get("goal_met") else MISSED
    axis.set_title(f"{name} - {words}", loc="left", fontsize=9, color=color)


def _bars(axis, rows: list[tuple[str, list[tuple[float, str, str]]]], unit: str) -> None:
    """Horizontal bars, one per row, each made of (width, colour, segment label) segments."""
    labels = [label for label, _ in rows]
    for position, (_, segments) in enumerate(rows):
        left = 0.0
        for width, color, segment in segments:
            axis.barh(position, width or 0.0, left=left, color=color, label=segment or None)
            left += width or 0.0
        axis.text(left, position, f" {left:.3g} {unit}", va="center", fontsize=8)
    axis.set_yticks(range(len(rows)), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel(unit, fontsize=8)
    axis.margins(x=0.15)
    _legend(axis)


def _legend(axis) -> None:
    handles, names = axis.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    if len(unique) > 1:
        axis.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _studio_segments(scenario: dict) -> list[tuple[float, str, str]]:
    """The studio's time split into uploading, waiting for a worker and processing."""
    if "studio_upload_s" not in scenario:
        return [(scenario["studio_s"], STUDIO, "studio")]
    return [
        (scenario["studio_upload_s"], UPLOADING, "upload"),
        (scenario["studio_queued_s"], QUEUED, "queued (worker idle)"),
        (scenario["studio_processing_s"], STUDIO, "processing"),
    ]


def _video_pipeline(axis, scenario: dict) -> None:
    _bars(
        axis,
        [
            ("seed-style (original)", [(scenario["seed_style_s"], BASELINE, "")]),
            ("decode only", [(scenario["decode_only_s"], BASELINE, "")]),
            ("studio", _studio_segments(scenario)),
        ],
        "s",
    )


def _video_sparse(axis, scenario: dict) -> None:
    _bars(
        axis,
        [("decode only", [(scenario["decode_only_s"], BASELINE, "")]), ("studio", _studio_segments(scenario))],
        "s",
    )


def _video_dense(axis, scenario: dict) -> None:
    _bars(
        axis,
        [("decode and encode", [(scenario["decode_encode_s"], BASELINE, "")]), ("studio", _studio_segments(scenario))],
        "s",
    )


def _video_queue(axis, scenario: dict) -> None:
    copies = scenario["copies"]
    rows = [
        ("one video", [(scenario["single_s"], BASELINE, "")]),
        (f"{copies} one after another (est.)", [(copies * scenario["single_s"], BASELINE, "")]),
        (f"{copies} at once: last done", [(scenario["total_s"], STUDIO, "")]),
    ]
    rows += [(f"  copy {number} done", [(done, STUDIO, "")]) for number, done in enumerate(scenario.get("done_s", []), 1)]
    _bars(axis, rows, "s")


def _predict(axis, scenario: dict) -> None:
    _bars(
        axis,
        [
            ("Keras in process", [(scenario["in_process_s"], BASELINE, "")]),
            ("studio Classify", [(scenario["studio_s"], STUDIO, "")]),
        ],
        "s",
    )


def _gateway(axis, scenario: dict) -> None:
    _bars(
        axis,
        [
            ("direct p50", [(scenario["direct_p50_ms"], BASELINE, "")]),
            ("gateway p50", [(scenario["gateway_p50_ms"], STUDIO, "")]),
            ("direct p99", [(scenario["direct_p99_ms"], BASELINE, "")]),
            ("gateway p99", [(scenario["gateway_p99_ms"], STUDIO, "")]),
        ],
        "ms",
    )


def _upload(axis, scenario: dict) -> None:
    _bars(
        axis,
        [
            ("raw write to storage", [(scenario["raw_write_s"], BASELINE, "")]),
            (f"studio (RSS +{scenario['peak_rss_growth_mb']:.0f} MB)", [(scenario["studio_s"], STUDIO, "")]),
        ],
        "s",
    )


def _export(axis, scenario: dict) -> None:
    small, large = sorted(int(count) for count in scenario.get("runs", {})) or (0, scenario["images"])
    _bars(
        axis,
        [
            (f"{small:,} images (RSS +{scenario['small_peak_rss_growth_mb']:.0f} MB)", [(scenario["small_studio_s"], STUDIO, "")]),
            (f"{large:,} images (RSS +{scenario['peak_rss_growth_mb']:.0f} MB)", [(scenario["studio_s"], STUDIO, "")]),
        ],
        "s",
    )


def _cpu_by_process(name: str, scenario: dict) -> tuple[dict[str, float], str]:
    """CPU seconds by process of one studio run (per request for the gateway) and its caption."""
    if name == "gateway":
        per_request = scenario.get("cpu_ms_per_request", {}).get("gateway", {})
        return per_request, f"{sum(per_request.values()):.2f} ms CPU per request"
    used = scenario.get("studio_cpu_s", {})
    return used, f"{sum(used.values()):.2f} s CPU per run"


def _cpu_shares(axis, scenarios: dict) -> None:
    """One bar per scenario: which processes the studio's CPU time went to (shares of it)."""
    rows = [
        (name, *_cpu_by_process(name, scenarios[name]))
        for name in SCENARIOS
        if name in scenarios and not scenarios[name].get("error") and _cpu_by_process(name, scenarios[name])[0]
    ]
    processes = sorted({process for _, used, _ in rows for process in used})
    colors = dict(zip(processes, matplotlib_colors(len(processes)), strict=True))
    for position, (_, used, caption) in enumerate(rows):
        total, left = sum(used.values()), 0.0
        for process, seconds in sorted(used.items(), key=lambda item: -item[1]):
            axis.barh(position, seconds / total * 100, left=left, color=colors[process], label=process)
            left += seconds / total * 100
        axis.text(101, position, caption, va="center", fontsize=8)
    axis.set_yticks(range(len(rows)), [name for name, _, _ in rows], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 135)
    axis.set_xlabel("% of the studio's CPU time, by process", fontsize=8)
    axis.set_title("where the studio's CPU time goes (client = bench)", loc="left", fontsize=9)
    _legend(axis)


def matplotlib_colors(count: int) -> list:
    import matplotlib

    palette = matplotlib.colormaps["tab20"]
    # The strong colours first, then their light twins: neighbours never look alike.
    return [palette((2 * index) % 20 + (2 * index // 20) % 2) for index in range(count)]


def _detector_video(axis, scenario: dict) -> None:
    _bars(
        axis,
        [
            ("NanoDet in process", [(scenario["in_process_s"], BASELINE, "")]),
            ("studio video", _studio_segments(scenario)),
        ],
        "s",
    )


def _fewshot_training(axis, scenario: dict) -> None:
    phases = scenario.get("transfer_phases_s") or {}
    colors = matplotlib_colors(len(phases))
    transfer = [(seconds, color, f"transfer: {phase}") for (phase, seconds), color in zip(phases.items(), colors, strict=True)]
    transfer = transfer or [(scenario["transfer_train_s"], STUDIO, "")]
    rows = [
        (f"scratch ({scenario['scratch_accuracy']:.0%} right)", [(scenario["scratch_train_s"], BASELINE, "")]),
        (f"transfer ({scenario['transfer_accuracy']:.0%} right)", transfer),
        ("transfer, cached features", [(scenario["transfer_retrain_s"], STUDIO, "")]),
    ]
    if "studio_train_s" in scenario:
        rows.append((f"studio create to Trained ({scenario['studio_transfer_accuracy']:.0%} right)",
                     [(scenario["studio_train_s"], STUDIO, "")]))
    _bars(axis, rows, "s")


def _list_images(axis, scenario: dict) -> None:
    _bars(
        axis,
        [
            ("MongoDB read (pymongo)", [(scenario["mongo_read_s"], BASELINE, "")]),
            (f"studio GET /images/all ({scenario['images']:,})", [(scenario["studio_s"], STUDIO, "")]),
        ],
        "s",
    )


def _predict_concurrent(axis, scenario: dict) -> None:
    _bars(
        axis,
        [
            ("Keras in process, batch 64", [(scenario["in_process_s"], BASELINE, "")]),
            (f"studio, {scenario['clients']} clients x {scenario['images_per_request']}", [(scenario["studio_s"], STUDIO, "")]),
        ],
        "s",
    )


def _footprint(axis, scenario: dict) -> None:
    by_process = sorted(scenario.get("rss_mb", {}).items(), key=lambda item: -item[1])
    _bars(axis, [(name, [(mb, STUDIO, "")]) for name, mb in by_process] or [("stack", [(scenario["idle_rss_mb"], STUDIO, "")])], "MB")


PANELS = {
    "video_pipeline": _video_pipeline,
    "video_sparse": _video_sparse,
    "video_dense": _video_dense,
    "video_queue": _video_queue,
    "predict": _predict,
    "gateway": _gateway,
    "upload": _upload,
    "export": _export,
    "detector_video": _detector_video,
    "fewshot_training": _fewshot_training,
    "list_images": _list_images,
    "footprint": _footprint,
    "predict_concurrent": _predict_concurrent,
}


if __name__ == "__main__":
    source = Path(sys.argv[1])
    write_all(json.loads(source.read_text()), Path(sys.argv[2]) if len(sys.argv) > 2 else source.parent, source.stem)
