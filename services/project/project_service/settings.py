"""The project service's settings."""
from dataclasses import dataclass

from mlstudio.common.settings import ServiceSettings, env


@dataclass(frozen=True, kw_only=True)
class ProjectSettings(ServiceSettings):
    service_name: str = "project"
    delete_retry_s: float = env("DELETE_RETRY_S", 30.0, help="how often unfinished project deletions are retried")
    delete_job_lease_s: float = env("PROJECT_DELETE_LEASE_S", 60.0, help="a delete cascade whose worker stopped renewing its lease this long is taken over by another")
    final_sweep_after_s: float = env("PROJECT_FINAL_SWEEP_S", 600.0, help="a deleted project's data is deleted once more this long after (uploads that were in flight), then its record goes")
