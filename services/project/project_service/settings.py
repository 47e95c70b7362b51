"""The project service's settings."""
from dataclasses import dataclass

from mlstudio.common.settings import ServiceSettings, env


@dataclass(frozen=True, kw_only=True)
class ProjectSettings(ServiceSettings):
    service_name: str = "project"
    delete_retry_s: float = env("DELETE_RETRY_S", 30.0, help="how often unfinished project deletions are retried")
