"""The image service's settings: upload limits, how Detection images are filed, the deletion sweep,
dataset exports and imports."""
from dataclasses import dataclass

from mlstudio.common.settings import ServiceSettings, env

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class ImageSettings(ServiceSettings):
    service_name: str = "image"
    max_image_bytes: int = env("MAX_IMAGE_BYTES", 20 * MIB, help="largest accepted image file, in bytes")
    max_images_per_request: int = env("MAX_IMAGES_PER_REQUEST", 100, help="most files one upload or prediction may carry")
    max_image_pixels: int = env("MAX_IMAGE_PIXELS", 50_000_000, help="largest accepted image, in pixels (guards against decompression bombs)")
    # The same variable sets the gateway's body limit of POST /images/..., so both agree.
    max_upload_bytes: int = env("MAX_IMAGE_UPLOAD_BYTES", 256 * MIB, help="largest request body of an upload, in bytes")
    predict_deadline_s: float = env("PREDICT_DEADLINE_S", 600.0, help=(
        "how long POST /images/predict may take; past it (or once its client hung up) nothing is stored and the "
        "model service is not asked again"))
    predict_batch_bytes: int = env("PREDICT_BATCH_BYTES", 16 * MIB, help="most image bytes sent to the model service in one call")
    detection_filing: str = env("DETECTION_FILING", "detected",
                                help="what Detection images are filed under: detected (every one, as the original did; the "
                                     "original UI's box editor needs it) or top_label (the most confident object's label)")
    delete_retry_s: float = env("DELETE_RETRY_S", 60.0, help="how often unfinished image deletions are finished")
    export_ttl_s: float = env("EXPORT_TTL_S", 86400.0, help="how long a finished export's zip stays downloadable")
    export_sweep_s: float = env("EXPORT_SWEEP_S", 300.0, help="how often expired exports are removed")
    export_workers: int = env("EXPORT_WORKERS", 1, help="export and import jobs this process runs at once (0: none, another replica runs them)")
    job_lease_s: float = env("EXPORT_JOB_LEASE_S", 30.0, help="an export or import job's lease; a dead worker's job is taken over after it")
    max_import_entries: int = env("MAX_IMPORT_ENTRIES", 50_000, help="most entries (files and folders) an imported zip may hold")
    max_import_expanded_bytes: int = env("MAX_IMPORT_EXPANDED_BYTES", 8 * 1024 * MIB, help="most bytes an imported zip may expand to")
    max_annotation_bytes: int = env("MAX_ANNOTATION_BYTES", 256 * MIB, help="largest annotation file (COCO JSON, ...) of an import")
