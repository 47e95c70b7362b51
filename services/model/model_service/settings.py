"""The model service's settings: TF Serving's address and repository, upload/inference limits, and
training (shared by the service, which validates training requests, and the trainer worker)."""
from dataclasses import dataclass
from pathlib import Path

from mlstudio.common.settings import ServiceSettings, env


@dataclass(frozen=True, kw_only=True)
class ModelSettings(ServiceSettings):
    service_name: str = "model"
    tfserving_addr: str = env("TFSERVING_ADDR", "127.0.0.1:8500", help="TensorFlow Serving's gRPC address: host:port, or unix:<socket path> (the local stack's)")
    tfserving_model_base: str = env("TFSERVING_MODEL_BASE", "", help="TF Serving's model repository, where this service writes SavedModels (default DATA_DIR/tfserving-models)")
    tfserving_model_base_in_server: str = env("TFSERVING_MODEL_BASE_IN_SERVER", "", help="the same directory as TF Serving sees it, when it runs elsewhere (a container); default: TFSERVING_MODEL_BASE")
    tfserving_config_file: str = env("TFSERVING_CONFIG_FILE", "", help="TF Serving's model config file (--model_config_file); default <model base>/models.config")
    tfserving_predict_deadline_s: float = env("TFSERVING_PREDICT_DEADLINE_S", 30.0, help="deadline of one Predict call")
    tfserving_control_deadline_s: float = env("TFSERVING_CONTROL_DEADLINE_S", 10.0, help="deadline of status and metadata calls")
    tfserving_connect_wait_s: float = env("TFSERVING_CONNECT_WAIT_S", 3.0, help=(
        "how long a call waits for TF Serving to accept a connection when the channel is not up, before answering 503 "
        "'TensorFlow Serving is not reachable' (the deadlines above are for work on a connection that is up)"))
    model_load_timeout_s: float = env("MODEL_LOAD_TIMEOUT_S", 120.0, help="how long an upload waits for TF Serving to load the model (also the deadline of config reloads)")
    predict_max_batch: int = env("PREDICT_MAX_BATCH", 64, help="most images in one Predict call; bigger requests are split")
    predict_batch_window_ms: float = env("PREDICT_BATCH_WINDOW_MS", 0.0, help=(
        "how long a prediction waits for concurrent ones of the same model to share its Predict call (up to "
        "PREDICT_MAX_BATCH images together); 0: each goes alone (the default: where TF Serving's Predict already "
        "uses every core, waiting costs more than sharing saves; see docs/performance.md)"))
    model_upload_max_bytes: int = env("MAX_MODEL_UPLOAD_BYTES", 2 << 30, help="largest model file accepted (the gateway's limit of POST /models/all)")
    convert_timeout_s: float = env("MODEL_CONVERT_TIMEOUT_S", 600.0, help="time limit of converting one uploaded model")
    convert_concurrency: int = env("MODEL_CONVERT_CONCURRENCY", 1, help="conversions running at once (each loads TensorFlow)")
    export_require_isolation: bool = env("MODEL_EXPORT_REQUIRE_ISOLATION", False, help=(
        "refuse to convert models (503) where bubblewrap cannot confine the converter; false: convert them there in a "
        "child without bubblewrap (clean environment, limits, unprivileged user only), with a warning in the log"))
    export_user: str = env("MODEL_EXPORT_USER", "nobody", help="who runs the model converter when the service runs as root (empty: root itself, unsafe)")
    export_memory_mb: int = env("MODEL_EXPORT_MEMORY_MB", 4096, help="memory the model converter may allocate (RLIMIT_DATA), in MiB")
    dynamic_input_size: int = env("MODEL_DYNAMIC_INPUT_SIZE", 512, help="height and width given to models whose input size is not fixed")
    pretrained_dir: str = env("PRETRAINED_DIR", "", help="the converted built-in models (`make pretrained`); default .cache/pretrained at the repository root. Missing: the service runs without them")
    startup_tfserving_wait_s: float = env("STARTUP_TFSERVING_WAIT_S", 60.0, help="how long start-up waits for TF Serving to take the model config before serving anyway")
    reconcile_s: float = env("MODEL_RECONCILE_S", 30.0, help="how often TF Serving is checked against the database")
    # Training (method=create) and the trainer worker (python -m model_service.trainer).
    training_time_limit_s: int = env("TRAINING_TIME_LIMIT_S", 3600, help="wall-clock limit of a training that names no time_limit_s")
    training_max_time_limit_s: int = env("TRAINING_MAX_TIME_LIMIT_S", 21600, help="largest time_limit_s a training request may ask for")
    training_cpu_limit_s: int = env("TRAINING_CPU_LIMIT_S", 0, help="CPU seconds a training may use (0: its time limit times the CPU count)")
    training_memory_mb: int = env("TRAINING_MEMORY_MB", 4096, help="memory a training may allocate (RLIMIT_DATA), in MiB")
    training_max_processes: int = env("TRAINING_MAX_PROCESSES", 512, help="processes and threads of the training's user (RLIMIT_NPROC)")
    training_max_file_mb: int = env("TRAINING_MAX_FILE_MB", 2048, help="largest file a training may write, in MiB")
    training_disk_quota_mb: int = env("TRAINING_DISK_QUOTA_MB", 4096, help="all a training may write (its working directory and /tmp, the dataset not counted), in MiB; past it the training is stopped")
    training_min_images_per_tag: int = env("TRAINING_MIN_IMAGES_PER_TAG", 5, help="fewest images of each tag to train on")
    training_max_dataset_mb: int = env("TRAINING_MAX_DATASET_MB", 4096, help="largest dataset (all images of a project) to train on, in MiB")
    training_max_script_bytes: int = env("TRAINING_MAX_SCRIPT_BYTES", 1 << 20, help="largest training script accepted")
    training_log_bytes: int = env("TRAINING_LOG_BYTES", 256 << 10, help="how much of a training's output is kept (its last bytes)")
    sandbox_user: str = env("SANDBOX_USER", "nobody", help="who runs training scripts when the trainer runs as root (never root itself)")
    sandbox_namespaces: bool = env("SANDBOX_NAMESPACES", True, help="isolate trainings with bubblewrap (no network, nothing of the host but their own data and Python, a PID namespace) where the platform allows; false: uploaded scripts are refused unless SANDBOX_REQUIRE_ISOLATION=false")
    sandbox_require_isolation: bool = env("SANDBOX_REQUIRE_ISOLATION", True, help=(
        "refuse to run uploaded training scripts (the training fails, saying why) unless the network, mount and PID "
        "namespaces were entered. false is UNSAFE: where namespaces are refused (many containers), an uploaded script "
        "then runs as the trainer's user with its network (it can call every service, and forge the gateway's "
        "x-jwt-payload header where services are reachable directly) and its files (the trainer's data, TF Serving's "
        "model repository, local object storage); only resource limits and a clean environment remain. The built-in "
        "recipe runs either way"))
    trainer_job_lease_s: float = env("TRAINER_JOB_LEASE_S", 30.0, help="a trainer's lease on a job; a dead trainer's job is taken over after it")
    trainer_job_max_attempts: int = env("TRAINER_JOB_MAX_ATTEMPTS", 3, help="claims of one training job before it is given up as failed")
    trainer_job_retry_delay_s: float = env("TRAINER_JOB_RETRY_DELAY_S", 10.0, help="first delay before a training that met a transient failure is retried")
    trainer_poll_s: float = env("TRAINER_POLL_S", 1.0, help="how often an idle trainer looks for jobs")
    trainer_id: str = env("TRAINER_ID", "", help="name of this trainer in job leases (default host:pid)")

    @property
    def model_base(self) -> Path:
        return Path(self.tfserving_model_base) if self.tfserving_model_base else self.data_dir / "tfserving-models"

    @property
    def pretrained_path(self) -> Path:
        from .pretrained import catalog

        return Path(self.pretrained_dir) if self.pretrained_dir else catalog.default_cache()

    @property
    def config_file(self) -> Path:
        return Path(self.tfserving_config_file) if self.tfserving_config_file else self.model_base / "models.config"
