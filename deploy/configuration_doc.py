"""Writes the settings tables of docs/configuration.md from the settings declarations.

Every setting is declared once, as a dataclass field made with `mlstudio.common.settings.env`
(variable, default, help): the local stack's launcher (`deploy.local.config.StackConfig`, its
ports in `deploy.local.config` and `deploy.local.registry`), TF Serving's launcher, the settings
every service shares (`ServiceSettings`) and each service's own (`<service>_service.settings`,
found by walking `services/`, so a new service or setting appears without touching this file).
The tables go between the BEGIN/END markers of docs/configuration.md; the prose around them is
hand-written.

    python -m deploy.configuration_doc           # rewrite the tables (`make docs`)
    python -m deploy.configuration_doc --check   # exit 1 when the page differs from the declarations
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Iterable
from pathlib import Path

from mlstudio.common import settings as settings_lib

from deploy.local import config as stack_config
from deploy.local import registry

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "configuration.md"
SERVICES_DIR = REPO / "services"
BEGIN = "<!-- BEGIN GENERATED: settings tables (`make docs` writes them from the settings declarations; do not edit) -->"
END = "<!-- END GENERATED: settings tables -->"
_BINARY_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def format_default(value) -> str:
    """A default as the table shows it: what one would write in the variable, plus the size in
    binary units for byte counts that are whole ones."""
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, int):
        for unit, size in _BINARY_UNITS:
            if value >= size and value % size == 0:
                return f"`{value}` ({value // size} {unit})"
        return f"`{value}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        value = ",".join(value)
    text = str(value)
    if text in ("", "."):
        return "(empty)"
    return f"`{text}`"


def _cell(text: str) -> str:
    # Markdown would take `<data>` for an HTML tag and `|` for a column.
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _table(rows: Iterable[tuple[str, str, str]]) -> list[str]:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {default} | {_cell(meaning)} |" for name, default, meaning in rows]
    return lines


def setting_rows(cls, *, skip: Iterable[str] = ()) -> list[tuple[str, str, str]]:
    """(variable, default, help) of each `env(...)` field of `cls` whose variable is not in `skip`."""
    skipped = set(skip)
    rows = []
    for field in dataclasses.fields(cls):
        name = field.metadata.get("env")
        if name is None or name in skipped:
            continue
        rows.append((name, format_default(field.default), field.metadata.get("help", "")))
    return rows


def port_rows() -> list[tuple[str, str, str]]:
    ports = [*stack_config.INFRASTRUCTURE_PORTS, *registry.declared_ports()]
    return [(port.env_var, f"`{port.default}`", f"{port.name} port") for port in ports]


def service_settings() -> list[tuple[str, type]]:
    """(service, settings class) for every `services/<name>/<name>_service/settings.py`: the
    classes it defines that extend ServiceSettings, in name order."""
    found = []
    for folder in sorted(SERVICES_DIR.iterdir()):
        if not (folder / f"{folder.name}_service" / "settings.py").is_file():
            continue
        module = importlib.import_module(f"{folder.name}_service.settings")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, settings_lib.ServiceSettings)
                    and value is not settings_lib.ServiceSettings and value.__module__ == module.__name__):
                found.append((folder.name, value))
    return found


def render() -> str:
    """The generated part of the page, markers included."""
    from tfserving_standin.launch import LaunchSettings

    common = {row[0] for row in setting_rows(settings_lib.ServiceSettings)}
    lines = [BEGIN, "", "### The local stack (`make run`, `make up`)", "",
             "Read by the launcher (`deploy/local/config.py`), which passes them on to the processes it starts.", ""]
    lines += _table(setting_rows(stack_config.StackConfig))
    lines += ["", "### Ports of the local stack", "",
              "Each moves with its variable (`deploy/local/config.py`, `deploy/local/registry.py`); all listen on 127.0.0.1.", ""]
    lines += _table(port_rows())
    lines += ["", "### TF Serving's launcher", "",
              "`python -m tfserving_standin.launch` (`services/model/tfserving_standin/launch.py`); the local stack sets all "
              "but `TFSERVING_REQUIRE_SANDBOX`.", ""]
    lines += _table(setting_rows(LaunchSettings))
    lines += ["", "### Every service", "",
              "Read by every service and worker (`services/common/mlstudio/common/settings.py`); the local stack sets the "
              "addresses, ports and keys itself.", ""]
    lines += _table(setting_rows(settings_lib.ServiceSettings))
    for service, cls in service_settings():
        source = Path(sys.modules[cls.__module__].__file__).relative_to(REPO)
        lines += ["", f"### The {service} service (`{cls.__name__}`)", "",
                  f"`{source}`, read by the {service} service and its workers, besides those of every service.", ""]
        lines += _table(setting_rows(cls, skip=common))
    lines += ["", END]
    return "\n".join(lines)


def updated(page: str) -> str:
    """`page` with the text between the markers replaced by `render()`."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{PAGE.relative_to(REPO)} lacks the markers {BEGIN!r} ... {END!r}")
    return page[:start] + render() + page[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.configuration_doc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs from the declarations")
    args = parser.parse_args(argv)
    return write_or_check(PAGE, updated(PAGE.read_text()), check=args.check, source="the settings declarations")


def write_or_check(path: Path, wanted: str, *, check: bool, source: str) -> int:
    """A generated file's `main`: with `check`, 1 (saying so) when `path` differs from `wanted`;
    else writes it when it differs. 0 otherwise."""
    current = path.read_text() if path.exists() else ""
    if wanted == current:
        return 0
    if check:
        print(f"{path.relative_to(REPO)} is out of date with {source}: run `make docs`", file=sys.stderr)
        return 1
    path.write_text(wanted)
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
