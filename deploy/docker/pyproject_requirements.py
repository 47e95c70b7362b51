"""Prints the third-party requirements of the given pyproject.toml files, one per line.

An image installs its service's dependencies in a layer of their own, before the service's
source is copied in, so that editing the code does not reinstall TensorFlow. The packages of
this repository (mlstudio-common, mlstudio-<service>) are left out: the image installs them
from source afterwards, without dependencies. Versions come from requirements.lock, which the
image passes to pip as a constraints file.

    python deploy/docker/pyproject_requirements.py services/common/pyproject.toml services/user/pyproject.toml
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement string, normalized."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return _normalized(match.group(1))


def external_requirements(pyprojects: list[Path]) -> list[str]:
    """The dependencies of `pyprojects` that are not themselves among `pyprojects`, in order."""
    projects = [tomllib.loads(path.read_text())["project"] for path in pyprojects]
    local = {_normalized(project["name"]) for project in projects}
    requirements: list[str] = []
    seen: set[str] = set()
    for project in projects:
        for requirement in project.get("dependencies", []):
            name = requirement_name(requirement)
            if name in local or name in seen:
                continue
            seen.add(name)
            requirements.append(requirement)
    return requirements


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: pyproject_requirements.py PYPROJECT.toml...\n")
        return 2
    for requirement in external_requirements([Path(arg) for arg in argv]):
        sys.stdout.write(requirement + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
