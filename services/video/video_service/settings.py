"""The video service's settings, shared by its HTTP/gRPC process and its worker processes."""
import math
import os
from dataclasses import dataclass
from pathlib import Path

from mlstudio.common import jobs
from mlstudio.common.settings import ConfigError, ServiceSettings, env

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True, kw_only=True)
class VideoSettings(ServiceSettings):
    service_name: str = "video"
    max_upload_bytes: int = env("MAX_VIDEO_UPLOAD_BYTES", 2 * GIB, help="largest accepted video upload (request body), in bytes; the gateway's limit of POST /videos/all")
    upload_tmp_dir: Path = env("VIDEO_TMP_DIR", Path(""), help="where uploads and the worker's downloads are spooled (default DATA_DIR/tmp/video)")
    default_interval: int = env("VIDEO_DEFAULT_INTERVAL", 1, help="frame interval when an upload names neither interval nor interval_ms (1: every frame)")
    wait_timeout_s: float = env("VIDEO_WAIT_TIMEOUT_S", 600.0, help="longest an upload with wait=true waits for processing before answering")
    batch_size: int = env("VIDEO_BATCH_SIZE", 32, help="frames per prediction call and per CreateImages call")
    batch_bytes: int = env("VIDEO_BATCH_BYTES", 16 * MIB, help="most JPEG bytes in one batch (large frames make smaller batches)")
    batch_deadline_s: float = env("VIDEO_BATCH_DEADLINE_S", 60.0, help="deadline of the worker's gRPC calls, each carrying a batch of frames (Classify/Detect, CreateImages); at least GRPC_DEADLINE_S")
    jpeg_quality: int = env("VIDEO_JPEG_QUALITY", 90, help="JPEG quality of stored frames")
    job_lease_s: float = env("VIDEO_JOB_LEASE_S", 30.0, help="a worker's lease on a job; a dead worker's job is taken over after it")
    job_max_attempts: int = env("VIDEO_JOB_MAX_ATTEMPTS", 3, help="claims of one job before it is given up as failed")
    job_retry_delay_s: float = env("VIDEO_JOB_RETRY_DELAY_S", 5.0, help="first delay before a job that met a transient failure is retried (doubles each time)")
    job_dependency_wait_s: float = env("VIDEO_JOB_DEPENDENCY_WAIT_S", 3600.0, help="how long a job waits, without progress, for a service it needs (model, image, storage) before it fails; waiting uses up no attempt")
    job_max_dependency_delay_s: float = env("VIDEO_JOB_MAX_DEPENDENCY_DELAY_S", 60.0, help="longest delay between two tries of a job waiting for a service it needs")
    max_frame_pixels: int = env("VIDEO_MAX_FRAME_PIXELS", 50_000_000, help="largest accepted frame (width x height); keep it at most the image service's MAX_IMAGE_PIXELS, which refuses larger frames")
    worker_poll_s: float = env("VIDEO_WORKER_POLL_S", 1.0, help="how often an idle worker looks for retries and expired leases (new jobs wake it at once)")
    job_slots: int = env("VIDEO_JOB_SLOTS", 0, help="videos one worker process splits at once, each with its share of the CPUs; 0: one per CPU core the process may use (its affinity, at most its cgroup's CPU quota)")
    worker_id: str = env("VIDEO_WORKER_ID", "", help="name of this worker in job leases (default host:pid)")
    cancel_wait_s: float = env("VIDEO_CANCEL_WAIT_S", 10.0, help="how long a delete waits for the worker of a video in progress to stop")
    delete_retry_s: float = env("VIDEO_DELETE_RETRY_S", 30.0, help="period of the sweep that finishes unfinished deletions and queues the job of an upload interrupted before queuing it")

    def job_queue(self, collection) -> jobs.JobQueue:
        """The service's job queue, as both the API process and the workers use it."""
        return jobs.JobQueue(collection, lease_s=self.job_lease_s, max_attempts=self.job_max_attempts, retry_delay_s=self.job_retry_delay_s,
                             dependency_wait_s=self.job_dependency_wait_s, max_dependency_delay_s=self.job_max_dependency_delay_s)

    @property
    def job_slot_count(self) -> int:
        """`job_slots`, or one slot per core this process may use."""
        if self.job_slots < 0:
            raise ConfigError(f"VIDEO_JOB_SLOTS must be 0 (one per core) or more, not {self.job_slots}")
        return self.job_slots or usable_cores()

    @property
    def worker_call_deadline_s(self) -> float:
        """The worker's gRPC deadline: a batch of frames takes longer than a one-record call."""
        return max(self.grpc_deadline_s, self.batch_deadline_s)

    @property
    def tmp_dir(self) -> Path:
        return self.upload_tmp_dir if str(self.upload_tmp_dir) not in ("", ".") else self.data_dir / "tmp" / "video"


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity (which a cpuset narrows), at most its
    cgroup's CPU quota rounded up. A container limited to 2 CPUs on a 64-core node sees all 64
    in its affinity; sizing by them would start 64 jobs in the memory of a 2-CPU pod."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores  # no cgroup v2 limit to read (not Linux, or cgroup v1)
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))
