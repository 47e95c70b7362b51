"""The model service's settings: TF Serving's address and repository, and upload/inference limits."""
from dataclasses import dataclass
from pathlib import Path

from mlstudio.common.settings import ServiceSettings, env


@dataclass(frozen=True, kw_only=True)
class ModelSettings(ServiceSettings):
    service_name: str = "model"
    tfserving_addr: str = env("TFSERVING_ADDR", "127.0.0.1:8500", help="host:port of TensorFlow Serving's gRPC API")
    tfserving_model_base: str = env("TFSERVING_MODEL_BASE", "", help="TF Serving's model repository, where this service writes SavedModels (default DATA_DIR/tfserving-models)")
    tfserving_model_base_in_server: str = env("TFSERVING_MODEL_BASE_IN_SERVER", "", help="the same directory as TF Serving sees it, when it runs elsewhere (a container); default: TFSERVING_MODEL_BASE")
    tfserving_config_file: str = env("TFSERVING_CONFIG_FILE", "", help="TF Serving's model config file (--model_config_file); default <model base>/models.config")
    tfserving_predict_deadline_s: float = env("TFSERVING_PREDICT_DEADLINE_S", 30.0, help="deadline of one Predict call")
    tfserving_control_deadline_s: float = env("TFSERVING_CONTROL_DEADLINE_S", 10.0, help="deadline of status and metadata calls")
    model_load_timeout_s: float = env("MODEL_LOAD_TIMEOUT_S", 120.0, help="how long an upload waits for TF Serving to load the model (also the deadline of config reloads)")
    predict_max_batch: int = env("PREDICT_MAX_BATCH", 64, help="most images in one Predict call; bigger requests are split")
    model_upload_max_bytes: int = env("MAX_MODEL_UPLOAD_BYTES", 2 << 30, help="largest model file accepted (the gateway's limit of POST /models/all)")
    convert_timeout_s: float = env("MODEL_CONVERT_TIMEOUT_S", 600.0, help="time limit of converting one uploaded model")
    convert_concurrency: int = env("MODEL_CONVERT_CONCURRENCY", 1, help="conversions running at once (each loads TensorFlow)")
    dynamic_input_size: int = env("MODEL_DYNAMIC_INPUT_SIZE", 512, help="height and width given to models whose input size is not fixed")
    startup_tfserving_wait_s: float = env("STARTUP_TFSERVING_WAIT_S", 60.0, help="how long start-up waits for TF Serving to take the model config before serving anyway")
    reconcile_s: float = env("MODEL_RECONCILE_S", 30.0, help="how often TF Serving is checked against the database")

    @property
    def model_base(self) -> Path:
        return Path(self.tfserving_model_base) if self.tfserving_model_base else self.data_dir / "tfserving-models"

    @property
    def config_file(self) -> Path:
        return Path(self.tfserving_config_file) if self.tfserving_config_file else self.model_base / "models.config"
