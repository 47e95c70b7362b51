"""The video service's settings, shared by its HTTP/gRPC process and its worker processes."""
from dataclasses import dataclass
from pathlib import Path

from mlstudio.common.settings import ServiceSettings, env

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
    worker_poll_s: float = env("VIDEO_WORKER_POLL_S", 1.0, help="how often an idle worker looks for retries and expired leases (new jobs wake it at once)")
    worker_id: str = env("VIDEO_WORKER_ID", "", help="name of this worker in job leases (default host:pid)")
    cancel_wait_s: float = env("VIDEO_CANCEL_WAIT_S", 10.0, help="how long a delete waits for the worker of a video in progress to stop")
    delete_retry_s: float = env("VIDEO_DELETE_RETRY_S", 30.0, help="period of the sweep that finishes unfinished deletions and queues the job of an upload interrupted before queuing it")

    @property
    def worker_call_deadline_s(self) -> float:
        """The worker's gRPC deadline: a batch of frames takes longer than a one-record call."""
        return max(self.grpc_deadline_s, self.batch_deadline_s)

    @property
    def tmp_dir(self) -> Path:
        return self.upload_tmp_dir if str(self.upload_tmp_dir) not in ("", ".") else self.data_dir / "tmp" / "video"
