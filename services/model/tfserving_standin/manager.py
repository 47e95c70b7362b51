"""Which model versions the stand-in holds, loaded once each, as TF Serving's manager does.

The model config says which models exist and which of their versions to serve (version policy:
latest N, all, or specific versions); the versions are the numbered directories under each
model's base path. `apply` takes a new config, `sync` (also run by the file-system poll) loads
versions that should be served and unloads the others. A version's state moves START -> LOADING
-> AVAILABLE, or END with an error when loading fails, or UNLOADING -> END when it goes away.
Requests only ever look up an already loaded version; nothing loads a model per request.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

log = logging.getLogger(__name__)
State = get_model_status_pb2.ModelVersionStatus.State


class ConfigError(ValueError):
    """A model config the stand-in cannot apply (answered INVALID_ARGUMENT)."""


class ServableNotFound(LookupError):
    """No such model, or no such version available (answered NOT_FOUND)."""


@dataclass
class LoadedVersion:
    """One SavedModel version in memory: its callable signatures and their SignatureDefs.

    `root` is the loaded object itself, kept so the variables its signatures use stay alive."""

    version: int
    root: object
    signatures: dict
    signature_defs: dict


@dataclass
class VersionStatus:
    state: int
    error: str = ""
    loaded: LoadedVersion | None = None


@dataclass
class ServedModel:
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, VersionStatus] = field(default_factory=dict)


def read_config_file(path: Path) -> model_server_config_pb2.ModelServerConfig:
    """The text-format ModelServerConfig in `path` (empty when the file does not exist yet)."""
    from google.protobuf import text_format

    config = model_server_config_pb2.ModelServerConfig()
    if path.exists():
        text_format.Parse(path.read_text(), config)
    return config


def _versions_on_disk(base_path: str) -> list[int]:
    base = Path(base_path)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file())


def wanted_versions(config: model_server_config_pb2.ModelConfig, on_disk: list[int]) -> list[int]:
    """The versions `config`'s version policy asks for, given the versions on disk."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "specific":
        return sorted(set(policy.specific.versions))
    if kind == "all":
        return list(on_disk)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return on_disk[-count:]


def load_version(path: Path, version: int) -> LoadedVersion:
    loaded = tf.saved_model.load(str(path))
    saved_model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    defs = dict(saved_model.meta_graphs[0].signature_def) if saved_model.meta_graphs else {}
    defs.pop("__saved_model_init_op", None)
    return LoadedVersion(version, loaded, dict(loaded.signatures), defs)


class ModelManager:
    def __init__(self, *, max_load_retries: int = 5, load_retry_interval_s: float = 60.0):
        self.max_load_retries = max_load_retries
        self.load_retry_interval_s = load_retry_interval_s
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()

    def apply(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Serves exactly the models of `config` (loads and unloads as needed)."""
        kind = config.WhichOneof("config")
        if kind not in (None, "model_config_list"):
            raise ConfigError("the stand-in only takes a model_config_list")
        entries = list(config.model_config_list.config)
        names = [entry.name for entry in entries]
        if len(set(names)) != len(names):
            raise ConfigError("a model name appears twice in the config")
        for entry in entries:
            if not entry.name or not entry.base_path:
                raise ConfigError("every model needs a name and a base_path")
            if entry.model_platform not in ("", "tensorflow"):
                raise ConfigError(f"model {entry.name}: platform {entry.model_platform!r} is not supported")
        with self._lock:
            for name in set(self._models) - set(names):
                self._unload_all(self._models.pop(name))
            for entry in entries:
                current = self._models.get(entry.name)
                if current is None or current.config.base_path != entry.base_path:
                    if current is not None:
                        self._unload_all(current)
                    self._models[entry.name] = ServedModel(entry)
                else:
                    current.config = entry
        self.sync()

    def _unload_all(self, model: ServedModel) -> None:
        for status in model.versions.values():
            status.state, status.loaded = State.END, None
        log.info("unloaded model %s", model.config.name)

    def sync(self) -> None:
        """Loads wanted versions not yet loaded and unloads unwanted ones (one load at a time)."""
        with self._load_lock:
            with self._lock:
                plans = [(name, model, wanted_versions(model.config, _versions_on_disk(model.config.base_path)))
                         for name, model in self._models.items()]
            for name, model, wanted in plans:
                for version in wanted:
                    self._ensure_loaded(name, model, version)
                with self._lock:
                    for version, status in model.versions.items():
                        if version not in wanted and status.state != State.END:
                            status.state, status.loaded = State.END, None
                            log.info("unloaded %s version %s", name, version)

    def _ensure_loaded(self, name: str, model: ServedModel, version: int) -> None:
        with self._lock:
            status = model.versions.setdefault(version, VersionStatus(State.START))
            if status.state in (State.AVAILABLE, State.END) and (status.loaded or status.error):
                return
            path = Path(model.config.base_path) / str(version)
            if not (path / "saved_model.pb").is_file():
                return  # waits in START until the version directory appears
            status.state = State.LOADING
        loaded = self._load_with_retries(name, path, version)
        if isinstance(loaded, Exception):
            with self._lock:
                status.state, status.error = State.END, f"Failed to load {name} version {version}: {loaded}"
            return
        with self._lock:
            if self._models.get(name) is model:
                status.state, status.loaded, status.error = State.AVAILABLE, loaded, ""
                log.info("loaded %s version %s", name, version)

    def _load_with_retries(self, name: str, path: Path, version: int) -> LoadedVersion | Exception:
        """The loaded version, or the last error after 1 + max_load_retries attempts."""
        for attempt in range(self.max_load_retries + 1):
            if attempt:
                time.sleep(self.load_retry_interval_s)
            try:
                return load_version(path, version)
            except Exception as exc:  # noqa: BLE001 - reported through GetModelStatus, like TF Serving
                log.warning("loading %s version %s failed (attempt %d): %s", name, version, attempt + 1, exc)
                failure = exc
        return failure

    def failed_models(self) -> list[str]:
        """Configured models that gave up loading and have no available version (TF Serving's
        reload answers with an error naming them)."""
        with self._lock:
            return sorted(name for name, model in self._models.items()
                          if any(s.state == State.END and s.error for s in model.versions.values())
                          and not any(s.state == State.AVAILABLE for s in model.versions.values()))

    def statuses(self, name: str, version: int | None = None) -> list[tuple[int, VersionStatus]]:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise ServableNotFound(f"Could not find any versions of model {name}")
            found = [(v, s) for v, s in sorted(model.versions.items()) if version is None or v == version]
        if not found:
            raise ServableNotFound(f"Could not find version {version} of model {name}")
        return found

    def servable(self, name: str, version: int | None = None, label: str = "") -> LoadedVersion:
        """An AVAILABLE version of `name`: the given one, the labelled one, or the latest."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise ServableNotFound(f"Servable not found for request: Latest({name})")
            if label:
                if label not in model.config.version_labels:
                    raise ServableNotFound(f"Unrecognized servable version label: {label}")
                version = model.config.version_labels[label]
            available = {v: s.loaded for v, s in model.versions.items() if s.state == State.AVAILABLE and s.loaded}
            if version is None:
                if not available:
                    raise ServableNotFound(f"Servable not found for request: Latest({name})")
                return available[max(available)]
            if version not in available:
                raise ServableNotFound(f"Servable not found for request: Specific({name}, {version})")
            return available[version]
