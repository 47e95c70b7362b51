"""How pixels are scaled before a model sees them (API.md `preprocessing`).

Each mode is an affine map `pixel * scale + offset` over RGB values 0-255. The exporter bakes it
into the served SavedModel's signature (so TF Serving receives raw uint8 pixels, four times
smaller than floats); `apply` is the same map in numpy, for tests and for documentation.
"""
from __future__ import annotations

from mlstudio.common import errors
from mlstudio.common.lazy import lazy_module

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles

# mode -> (scale, offset)
MODES = {
    "raw": (1.0, 0.0),  # 0..255, the original's behaviour for uploaded models
    "unit": (1.0 / 255.0, 0.0),  # 0..1
    "symmetric": (1.0 / 127.5, -1.0),  # -1..1, Teachable Machine exports
}
DEFAULT = "raw"


def mode(value: str | None) -> str:
    """The preprocessing mode `value` names (default raw); 400 when unknown."""
    if value is None or not str(value).strip():
        return DEFAULT
    name = str(value).strip().lower()
    if name not in MODES:
        raise errors.InvalidArgument(f"preprocessing {value!r} is unknown: use raw, unit or symmetric")
    return name


def apply(pixels: np.ndarray, name: str) -> np.ndarray:
    """`pixels` (uint8 or float, 0-255) scaled as mode `name` does, as float32."""
    scale, offset = MODES[name]
    return pixels.astype(np.float32) * np.float32(scale) + np.float32(offset)
