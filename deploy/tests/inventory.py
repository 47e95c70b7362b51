"""The processes of the system, derived from the repository, and the deployment files' views
of them, for the tests that check every process is deployed everywhere.

A domain service is a folder `services/<name>/` holding the package `<name>_service`; a worker
is a console script that a service's pyproject.toml declares besides the service itself
(`mlstudio-video-worker = "video_service.worker:main"` is the process `video-worker`). Adding
either without deploying it fails the tests.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICES_DIR = REPO / "services"
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_CI_FILE = REPO / "deploy" / "docker" / "ci" / "docker-compose.ci.yml"
# The one image recipe of every service and worker (build arguments SERVICE and MODULE).
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
KUBERNETES_DIR = REPO / "deploy" / "kubernetes"
LOCK_FILE = REPO / "requirements.lock"

# Workers that the design names before their code lands (DESIGN.md: "workers: video-worker,
# model-trainer"); each is deployed from the day it is planned.
PLANNED_WORKERS = {"model-trainer": "model_service.trainer"}
# Infrastructure: the gateway, TF Serving and the data stores.
INFRASTRUCTURE = ("gateway", "tf-serving", "mongodb", "minio")
# Environment variables a process may get that are not settings of the service.
PROCESS_ENVIRONMENT = {"PATH", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "KERAS_HOME"}


@dataclasses.dataclass(frozen=True)
class Process:
    """One process of ML Studio that runs in its own container."""

    name: str  # compose service, Kubernetes workload and image name
    module: str  # python -m <module>
    service: str  # the service package it belongs to (services/<service>)

    @property
    def is_worker(self) -> bool:
        return self.module != f"{self.service}_service"

    @property
    def dockerfile(self) -> Path:
        return DOCKERFILE

    @property
    def target(self) -> str:
        """The build target of its image: the trainer adds bubblewrap, every other is `app`."""
        return "trainer" if self.module == "model_service.trainer" else "app"


def service_names() -> list[str]:
    """Every domain service: services/<name>/ with a package <name>_service."""
    return sorted(d.name for d in SERVICES_DIR.iterdir() if (d / f"{d.name}_service").is_dir())


def _scripts(service: str) -> dict[str, str]:
    pyproject = SERVICES_DIR / service / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    return tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {})


def app_processes() -> list[Process]:
    """The services and workers, from the repository (plus the planned workers)."""
    processes = {name: Process(name, f"{name}_service", name) for name in service_names()}
    for service in service_names():
        for script, target in _scripts(service).items():
            module = target.split(":", 1)[0]
            if module in (f"{service}_service", f"{service}_service.__main__"):
                continue
            name = script.removeprefix("mlstudio-")
            processes[name] = Process(name, module, service)
    for name, module in PLANNED_WORKERS.items():
        processes.setdefault(name, Process(name, module, module.split("_service", 1)[0]))
    return sorted(processes.values(), key=lambda p: p.name)


def all_process_names() -> set[str]:
    return {p.name for p in app_processes()} | set(INFRASTRUCTURE)


def settings_variables(process: Process) -> set[str]:
    """The environment variables that the settings of `process`'s package read."""
    from mlstudio.common import settings

    module = importlib.import_module(f"{process.service}_service.settings")
    classes = [value for value in vars(module).values()
               if isinstance(value, type) and issubclass(value, settings.ServiceSettings)]
    return {row[0] for cls in classes for row in settings.describe(cls)}


def locked_version(package: str) -> str:
    """The version of `package` pinned in requirements.lock."""
    wanted = re.sub(r"[-_.]+", "-", package).lower()
    for line in LOCK_FILE.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and re.sub(r"[-_.]+", "-", name).lower() == wanted:
            return version.strip()
    raise LookupError(f"{package} is not in requirements.lock")
