"""Keeps TF Serving holding exactly the model versions the database says are served.

The model config is always derived from the database (`served_versions`), written to the config
file (which a restarted TF Serving reads) and applied with HandleReloadConfigRequest, under one
lock, so concurrent uploads and deletes converge on the same config. When TF Serving cannot be
reached the config is marked dirty and the service's reconcile loop applies it again later.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from mlstudio.common import errors
from mlstudio.common.deadlines import NONE, Deadline
from mlstudio.common.lazy import lazy_module

from .batching import PredictBatcher
from .tfserving_client import ModelLoadFailed
from .tfserving_repository import ServedVersion, TFServingRepository

np = lazy_module("numpy")  # loaded by the first request that needs it, not while the process idles

log = logging.getLogger(__name__)


class Serving:
    def __init__(self, repository: TFServingRepository, client, served_versions: Callable[[], list[ServedVersion]], *, load_timeout_s: float = 120.0,
                 batch_window_s: float = 0.0, max_batch: int = 64):
        self.repository = repository
        self.client = client
        # Concurrent predictions of one model share Predict calls (batching.py); a window of 0
        # sends each as it comes.
        self.batcher = PredictBatcher(lambda *args, **kwargs: self.client.predict(*args, **kwargs),
                                      window_s=batch_window_s, max_rows=max_batch)
        self.served_versions = served_versions
        self.load_timeout_s = load_timeout_s
        self.dirty = True
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def workspace(self) -> Iterator[Path]:
        """A scratch directory on the repository's filesystem (so installs are renames)."""
        path = self.repository.staging_dir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def apply(self) -> None:
        """Writes the config from the database and makes TF Serving apply it."""
        with self._lock:
            config = self.repository.write_config(self.served_versions())
            try:
                self.client.reload_config(config)
            except errors.DomainError:
                self.dirty = True
                raise
            self.dirty = False

    def publish(self, name: str, version: int) -> None:
        """Applies the config (which now names `name`/`version`) and waits until it is served.

        TF Serving answers a reload with an error when any configured model failed to load;
        whether *this* model loaded is what its own state says."""
        try:
            self.apply()
        except ModelLoadFailed as exc:
            log.warning("TF Serving reported a load failure while adding %s: %s", name, exc.message)
        self.client.wait_available(name, version, self.load_timeout_s)

    def failed(self, served: list[ServedVersion]) -> dict[ServedVersion, str]:
        """The versions among `served` that TF Serving gave up loading, with its reason."""
        found = {}
        for item in served:
            state, message = self.client.version_state(item.name, item.version)
            if state == "END" and message:
                found[item] = message
        return found

    def withdraw(self, name: str) -> None:
        """Stops serving `name` (already gone from the database's served list), then removes its
        files. An unreachable TF Serving does not stop the delete: the config file no longer
        names the model and the reconcile loop re-applies it."""
        try:
            self.apply()
        except errors.DomainError as exc:
            log.warning("TF Serving not updated after removing %s, will retry: %s", name, exc.message)
        self.repository.remove(name)

    def predict(self, name: str, version: int, inputs: dict[str, np.ndarray], output_keys: list[str],
                deadline: Deadline = NONE) -> dict[str, np.ndarray]:
        try:
            return self.batcher.predict(name, version, inputs, output_keys, deadline=deadline)
        except errors.Unavailable as exc:
            if exc.code == "model_not_loaded":
                self.dirty = True  # TF Serving lost the model (restarted?): re-apply the config
            raise
