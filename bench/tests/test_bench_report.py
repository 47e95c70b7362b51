"""The benchmark's report writer on a made-up run: the JSON keeps every figure issue 8 names,
the Markdown table has a row per goal saying whether it held, the chart is a PNG. Timings are
not checked (they are the benchmark's output, not something a test can expect)."""

from __future__ import annotations

import importlib
import json

from bench import report
from bench.goals import all_met, goal
from bench.measure import paired_ratio, percentile

# The keys issue 8 asks each scenario to write.
ISSUE_KEYS = {
    "video_pipeline": {"seed_style_s", "decode_only_s", "studio_s", "frames", "sampled"},
    "video_sparse": {"decode_only_s", "studio_s"},
    "predict": {"in_process_s", "studio_s"},
    "gateway": {"direct_p50_ms", "gateway_p50_ms", "direct_p99_ms", "gateway_p99_ms", "direct_rps", "gateway_rps"},
    "upload": {"raw_write_s", "studio_s", "peak_rss_growth_mb"},
    "export": {"studio_s", "peak_rss_growth_mb", "small_peak_rss_growth_mb"},
}
# Issue 18's names and keys for the pretrained models' scenarios.
ISSUE_18_KEYS = {
    "fewshot_training": {"transfer_accuracy", "scratch_accuracy", "transfer_train_s"},
    "detector_video": {"studio_frames_per_s", "in_process_frames_per_s"},
}


def synthetic_results() -> dict:
    def scenario(goals, **figures):
        return {**figures, "goals": goals, "goal_met": all_met(goals), "runs": {}}

    return {
        "started_at": "2026-01-01T00:00:00+00:00",
        "commit": "abc1234",
        "machine": {"cpus": 2, "loadavg_start": [0.5, 0.4, 0.3], "loadavg_end": [1.0, 0.6, 0.4]},
        "settings": {"repeats": 3},
        "duration_s": 321.0,
        "scenarios": {
            "video_pipeline": scenario(
                [goal("seed_style_s / studio_s >= 10", 12.123456, 10, at_least=True)],
                seed_style_s=6.2,
                decode_only_s=0.26,
                studio_s=0.5111111,
                frames=1189,
                sampled=119,
                studio_upload_s=0.05,
                studio_queued_s=0.1,
                studio_processing_s=0.3611111,
                studio_cpu_s={"video-worker": 0.4, "image": 0.1, "model": 0.05},
            ),
            "video_sparse": scenario(
                [goal("studio_s <= 1.3 * decode_only_s", 1.5, 1.3, at_least=False)],
                decode_only_s=3.0,
                studio_s=4.5,
                frames=1800,
                sampled=60,
                studio_upload_s=0.2,
                studio_queued_s=0.3,
                studio_processing_s=4.0,
            ),
            "predict": scenario(
                [goal("in_process_s / studio_s >= 0.8", 0.9, 0.8, at_least=True)],
                in_process_s=0.45,
                studio_s=0.5,
                images=256,
            ),
            "gateway": scenario(
                [goal("gateway_p50_ms - direct_p50_ms <= 1", 0.7, 1, at_least=False)],
                direct_p50_ms=2.0,
                gateway_p50_ms=2.7,
                direct_p99_ms=9.0,
                gateway_p99_ms=11.0,
                direct_rps=900.0,
                gateway_rps=800.0,
                cpu_ms_per_request={"direct": {"project": 0.7}, "gateway": {"project": 0.7, "gateway": 0.2}},
            ),
            "upload": scenario(
                [
                    goal("raw_write_s / studio_s >= 0.5", 0.3, 0.5, at_least=True),
                    goal("peak_rss_growth_mb <= 100", 12.0, 100, at_least=False),
                ],
                raw_write_s=1.0,
                studio_s=3.3,
                peak_rss_growth_mb=12.0,
                bytes=524288000,
            ),
            "export": scenario(
                [
                    goal("peak_rss_growth_mb (10,000 images) <= 64", 20.0, 64, at_least=False),
                    goal("growth(10,000) - growth(1,000) <= 32 MB", 8.0, 32, at_least=False),
                ],
                images=10000,
                studio_s=30.0,
                small_studio_s=3.0,
                peak_rss_growth_mb=20.0,
                small_peak_rss_growth_mb=12.0,
                studio_cpu_s={"image": 25.0, "mongodb": 2.0},
            ),
            "detector_video": scenario(
                [goal("studio_frames_per_s / in_process_frames_per_s >= 0.8", 0.85, 0.8, at_least=True)],
                in_process_frames_per_s=10.0,
                studio_frames_per_s=8.5,
                in_process_s=9.5,
                studio_s=11.2,
                sampled=95,
                studio_upload_s=0.3,
                studio_queued_s=0.1,
                studio_processing_s=10.8,
            ),
            "fewshot_training": scenario(
                [
                    goal("transfer_accuracy on later frames >= 0.95", 0.98, 0.95, at_least=True),
                    goal("transfer_train_s (42 images) <= 60", 20.0, 60, at_least=False),
                ],
                transfer_accuracy=0.98,
                scratch_accuracy=0.17,
                transfer_train_s=20.0,
                scratch_train_s=15.0,
                transfer_retrain_s=17.0,
                transfer_phases_s={"start": 5.0, "load": 2.0, "features": 3.0, "head": 1.0, "save": 1.5},
                studio_train_s=40.0,
                studio_transfer_accuracy=0.98,
                train_images=42,
            ),
        },
    }


def test_json_keeps_every_key_the_issue_names(tmp_path):
    paths = report.write_all(synthetic_results(), tmp_path)

    written = json.loads(paths["json"].read_text())
    for name, keys in {**ISSUE_KEYS, **ISSUE_18_KEYS}.items():
        assert keys <= set(written["scenarios"][name]), name
        assert {"goals", "goal_met"} <= set(written["scenarios"][name])
    assert written["scenarios"]["video_pipeline"]["studio_s"] == 0.5111  # floats rounded for people
    assert written["machine"]["loadavg_start"] == [0.5, 0.4, 0.3]


def test_markdown_table_has_a_row_per_goal(tmp_path):
    markdown = report.write_all(synthetic_results(), tmp_path)["md"].read_text()

    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert rows[0] == "| scenario | figures | goal | value | held |"
    assert len(rows) == 2 + 11  # header, separator, one per goal (upload, export and fewshot_training have two)
    assert "| video_sparse |" in markdown and "`studio_s <= 1.3 * decode_only_s` | 1.5 | **no** |" in markdown
    assert "`seed_style_s / studio_s >= 10` | 12.1 | yes |" in markdown
    assert "load average at start 0.5" in markdown


def test_every_scenario_the_report_knows_is_a_module_with_figures_and_a_panel():
    assert set(ISSUE_18_KEYS) <= set(report.SCENARIOS)
    for name in report.SCENARIOS:
        assert callable(importlib.import_module(f"bench.scenarios.{name}").run), name
        assert name in report.FIGURES and name in report.PANELS, name


def test_chart_is_a_png(tmp_path):
    path = report.write_all(synthetic_results(), tmp_path)["png"]

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_a_failed_scenario_is_reported_not_dropped(tmp_path):
    results = synthetic_results()
    results["scenarios"]["predict"] = {"error": "RuntimeError: the model service | is down"}

    paths = report.write_all(results, tmp_path)

    assert "| predict | failed: RuntimeError: the model service \\| is down |" in paths["md"].read_text()
    assert json.loads(paths["json"].read_text())["scenarios"]["predict"]["error"].startswith("RuntimeError")
    assert paths["png"].stat().st_size > 0


def test_goals_percentiles_and_paired_ratios():
    assert goal("x >= 10", 9.99, 10, at_least=True)["met"] is False
    assert goal("x <= 1.3", 1.3, 1.3, at_least=False)["met"] is True
    assert all_met([goal("a", 1, 1, at_least=True), goal("b", None, 1, at_least=True)]) is None
    latencies = [float(value) for value in range(1, 101)]
    assert percentile(latencies, 0.50) == 50.0
    assert percentile(latencies, 0.99) == 99.0
    # the second pair ran while the machine was busy: both its runs are slow, its ratio is not
    assert paired_ratio([6.0, 30.0, 6.3], [0.5, 2.4, 0.6]) == 12.0


def test_the_list_footprint_and_concurrent_prediction_scenarios_are_reported(tmp_path):
    results = synthetic_results()
    results["scenarios"] = {
        "list_images": {
            "images": 50000, "studio_s": 3.4, "mongo_read_s": 1.0, "deep_offset_page_ms": 300.0,
            "deep_after_id_page_ms": 15.0, "tag_summary_ms": 130.0, "studio_cpu_s": {"image": 1.2, "mongodb": 0.1},
            "goals": [goal("studio_s <= 5 * mongo_read_s", 3.4, 5, at_least=False)], "runs": {},
        },
        "predict_concurrent": {
            "images": 256, "clients": 16, "images_per_request": 8, "studio_images_per_s": 700.0,
            "in_process_images_per_s": 760.0, "studio_s": 0.366, "in_process_s": 0.337,
            "goals": [goal("studio_images_per_s / in_process_images_per_s >= 0.9", 0.92, 0.9, at_least=True)], "runs": {},
        },
        "footprint": {
            "idle_rss_mb": 1627.0, "rss_mb": {"tfserving": 854.0, "model": 93.0}, "tensorflow_loaded": ["tfserving"],
            "goals": [goal("idle_rss_mb <= 1500", 1627.0, 1500, at_least=False)], "runs": {},
        },
    }
    for scenario in results["scenarios"].values():
        scenario["goal_met"] = all_met(scenario["goals"])

    paths = report.write_all(results, tmp_path)

    markdown = paths["md"].read_text()
    assert "| list_images | MongoDB read 1 s, studio list 3.4 s, deep page by offset 300 ms" in markdown
    assert "`studio_s <= 5 * mongo_read_s` | 3.4 | yes |" in markdown
    assert "| footprint | whole stack idle 1,627 MB | `idle_rss_mb <= 1500` | 1.63e+03 | **no** |" in markdown
    assert "| predict_concurrent | in-process Keras (batch 64) 760 images/s, studio, 16 clients x 8 images 700 images/s" in markdown
    assert paths["png"].stat().st_size > 10_000


def test_the_video_queue_scenario_is_reported_with_each_copy(tmp_path):
    results = synthetic_results()
    results["scenarios"] = {
        "video_queue": {
            "copies": 5, "single_s": 0.9, "total_s": 2.4, "first_done_s": 1.6, "done_s": [1.6, 1.7, 2.2, 2.3, 2.4],
            "goals": [goal("total_s <= 3 * single_s", 2.67, 3, at_least=False)], "runs": {},
        },
    }
    results["scenarios"]["video_queue"]["goal_met"] = True

    paths = report.write_all(results, tmp_path)

    markdown = paths["md"].read_text()
    assert "| video_queue | one video 0.9 s, five at once 2.4 s, first of the five done 1.6 s, videos 5 |" in markdown
    assert "`total_s <= 3 * single_s` | 2.67 | yes |" in markdown
    assert {"single_s", "total_s"} <= set(json.loads(paths["json"].read_text())["scenarios"]["video_queue"])
    assert paths["png"].stat().st_size > 10_000
