"""`python -m bench` (`make bench`): starts a stack of its own, runs every scenario, writes
bench/results/latest.{json,md,png}.

    python -m bench                      # the full run (under 10 minutes on the 2-core machine)
    python -m bench --quick              # small sizes, to try the harness (numbers not meaningful)
    python -m bench --only gateway,predict
    python -m bench --profile            # also py-spy the stack's processes (bench/work/profiles/)

A scenario that fails is recorded with its error and the others still run; the exit status is 1
when any failed. Goals that are missed are results, not failures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import measure, report
from .context import Context, Settings
from .profiling import StackProfiler
from .stack import Account, BenchStack

BENCH_DIR = Path(__file__).resolve().parent
log = logging.getLogger("bench")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measures ML Studio's performance goals (issue 8)."
    )
    parser.add_argument(
        "--only",
        default=",".join(report.SCENARIOS),
        help=f"comma-separated scenarios (default: all of {', '.join(report.SCENARIOS)})",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and single runs, to try the harness")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="where latest.{json,md,png} go")
    parser.add_argument(
        "--work", type=Path, default=BENCH_DIR / "work", help="cache of generated media and scratch space"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep this run's stack data directory (for looking at logs)"
    )
    parser.add_argument(
        "--stack-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the stack's processes (repeatable), to measure a change of settings",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the stack's processes with py-spy during each scenario "
        "into <work>/profiles/<scenario>/ (slows the run a little: numbers are then not the reference)",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    if any("=" not in item for item in args.stack_env):
        parser.error("--stack-env takes NAME=VALUE")
    args.stack_env = dict(item.split("=", 1) for item in args.stack_env)
    unknown = set(args.only) - set(report.SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(report.SCENARIOS)}")
    return args


def _commit() -> str:
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return described.stdout.strip() or "unknown"


def run_scenarios(names: list[str], context: Context, profiles: Path | None = None) -> dict:
    results = {}
    for name in names:
        log.info("scenario %s ...", name)
        started = time.perf_counter()
        profiler = StackProfiler(context.stack.pids(), profiles / name) if profiles else contextlib.nullcontext()
        try:
            with profiler:
                results[name] = importlib.import_module(f"bench.scenarios.{name}").run(context)
        except Exception as exc:  # noqa: BLE001 - recorded in the results; the other scenarios still run
            log.error("scenario %s failed:\n%s", name, traceback.format_exc())
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["scenario_s"] = time.perf_counter() - started
        log.info("scenario %s done in %.1f s", name, results[name]["scenario_s"])
    return results


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [bench] %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.ERROR)  # Keras' advice on file formats, not results
    settings = Settings.quick() if args.quick else Settings()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    results = {
        "started_at": started_at,
        "commit": _commit(),
        "quick": args.quick,
        "machine": measure.machine(),
        "settings": vars(settings),
        "profiled": args.profile,
        "stack_env": args.stack_env,
        "method": "figures: median of `repeats` runs; ratios: median of the ratios of runs made one after the other; every run is in `runs`",
    }
    args.work.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
    stack = BenchStack(scratch / "stack", **args.stack_env)
    try:
        log.info("starting the stack (data in %s)", stack.stack.data_dir)
        stack.start()
        results["stack_start_s"] = time.perf_counter() - started
        results["storage"] = stack.storage_url.split("://", 1)[0]  # the backend, never its credentials
        account = Account.register(stack, f"bench-{os.getpid()}-{int(time.time())}")
        context = Context(stack=stack, account=account, settings=settings, work_dir=args.work, scratch_dir=scratch)
        results["scenarios"] = run_scenarios(args.only, context, args.work / "profiles" if args.profile else None)
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    results["machine"]["loadavg_end"] = [round(value, 2) for value in os.getloadavg()]
    results["duration_s"] = time.perf_counter() - started
    paths = report.write_all(results, args.results)
    log.info("wrote %s", ", ".join(str(path) for path in paths.values()))
    print(report.markdown(results))
    return 1 if any("error" in scenario for scenario in results["scenarios"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
