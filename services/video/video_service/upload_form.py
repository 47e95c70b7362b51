"""The fields of a video upload, checked: which model, which frames to sample (and whether to skip
near-duplicates of the last frame kept), whether to wait.

Pure parsing of the multipart form's text fields, so every refusal has one sentence saying what
is wrong, before anything is stored. A field that is sent empty is refused rather than taken as
left out (an empty `interval` must not quietly mean "every frame"); only `title` and
`description` may be empty.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlstudio.common import detections as detection_forms, errors
from mlstudio.common.ids import MAX_ID  # ids travel as int64 in gRPC and are stored as such in MongoDB

MAX_INTERVAL = 1_000_000
MAX_TITLE = 200
MAX_DESCRIPTION = 5000
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class UploadOptions:
    model_id: int
    interval: int | None
    interval_ms: int | None
    wait: bool
    title: str
    description: str
    dedupe: bool = False
    threshold: float = 0.0  # Detection: the score a detection needs; 0, the project's threshold


def _positive_int(name: str, raw, what: str) -> int:
    text = str(raw).strip()
    try:
        value = int(text)
    except ValueError:
        raise errors.InvalidArgument(f"field {name} must be a positive integer ({what}), got {text!r}", code=f"invalid_{name}") from None
    if value <= 0 or value > MAX_INTERVAL:
        raise errors.InvalidArgument(f"field {name} must be a positive integer up to {MAX_INTERVAL} ({what}), got {text!r}", code=f"invalid_{name}")
    return value


def _positive_id(name: str, raw, what: str) -> int:
    """An id: any positive integer that fits the int64 the services exchange ids as (ids are
    not capped like the sampling options)."""
    text = str(raw).strip()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value <= MAX_ID:
        raise errors.InvalidArgument(f"field {name} must be a positive integer ({what}), got {text!r}", code=f"invalid_{name}")
    return value


def _sent(fields: Mapping[str, str], name: str, what: str) -> str | None:
    """The field's text; None when the form leaves it out; InvalidArgument when it is sent empty."""
    raw = fields.get(name)
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        raise errors.InvalidArgument(f"field {name} is empty: give {what}, or leave the field out", code=f"invalid_{name}")
    return text


def _flag(name: str, raw) -> bool:
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise errors.InvalidArgument(f"field {name} must be true or false, got {raw!r}", code=f"invalid_{name}")


def _text(name: str, raw, limit: int) -> str:
    text = str(raw or "").strip()
    if len(text) > limit:
        raise errors.InvalidArgument(f"field {name} is longer than {limit} characters", code=f"invalid_{name}")
    return text


def upload_options(fields: Mapping[str, str], filename: str, default_interval: int) -> UploadOptions:
    """The upload's options from its form fields (`wait` may also come as a query parameter).

    `interval_ms`, when given, samples by time and takes precedence over `interval`; with
    neither, every `default_interval`-th frame is sampled."""
    if not str(fields.get("model_id") or "").strip():
        raise errors.InvalidArgument("field model_id is required: the model that labels the frames", code="invalid_model_id")
    model_id = _positive_id("model_id", fields["model_id"], "a model's id")
    interval_ms_text = _sent(fields, "interval_ms", "a positive number of milliseconds between sampled frames")
    interval_text = _sent(fields, "interval", "a positive integer N to sample every N-th frame")
    wait_text = _sent(fields, "wait", "true or false")
    dedupe_text = _sent(fields, "dedupe", "true or false")
    threshold_text = _sent(fields, "threshold", "a number in (0, 1], the score a detection needs")
    interval_ms = None
    interval = None
    if interval_ms_text is not None:
        interval_ms = _positive_int("interval_ms", interval_ms_text, "sample one frame every N milliseconds")
    elif interval_text is not None:
        interval = _positive_int("interval", interval_text, "sample every N-th frame")
    else:
        interval = default_interval
    title = _text("title", fields.get("title"), MAX_TITLE) or (filename or "").strip()[:MAX_TITLE] or "video"
    return UploadOptions(
        model_id=model_id,
        interval=interval,
        interval_ms=interval_ms,
        wait=_flag("wait", wait_text) if wait_text is not None else False,
        title=title,
        description=_text("description", fields.get("description"), MAX_DESCRIPTION),
        dedupe=_flag("dedupe", dedupe_text) if dedupe_text is not None else False,
        threshold=detection_forms.threshold(threshold_text),
    )
