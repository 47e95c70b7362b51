"""Keeping TF Serving and the database in step: undoes abandoned registrations, finishes
deletes, queues trainings recorded without their job (the service stopped in between),
restores SavedModels missing from TF Serving's repository and re-applies its config.
"""
from __future__ import annotations

import datetime
import logging

from mlstudio.common import errors, mongo

from .. import archive
from ..tfserving_client import ModelLoadFailed
from ..tfserving_repository import serving_name
from .shared import FAILED, UNQUEUED_ERROR, served_versions

log = logging.getLogger(__name__)


class Reconcile:
    """The periodic sweep (a part of `ModelCore`)."""

    def reconcile(self) -> None:
        """Undoes abandoned registrations, finishes deletes, queues trainings recorded without
        their job, restores SavedModels missing from TF Serving's repository (a fresh TF
        Serving), and re-applies the config if needed."""
        for doc in self.repository.abandoned_registrations(mongo.utc_now()):
            log.warning("model %s: registration was abandoned; removing it", doc["_id"])
            self._discard(doc)
        for doc in self.repository.pending_deletions():
            self._discard(doc)
        self.queue_lost_trainings()
        if self.restore_missing() or self.serving.dirty:
            try:
                self.serving.apply()
            except ModelLoadFailed:
                self._fail_unloadable()
                self.serving.apply()

    def _fail_unloadable(self) -> None:
        """Marks `Failed` (and stops serving) the models TF Serving could not load, so that one
        broken model does not make every later config reload fail."""
        ids = {serving_name(doc["_id"]): doc["_id"] for doc in self.repository.served()}
        for item, message in self.serving.failed(served_versions(self.repository)).items():
            model_id = ids[item.name]
            log.error("model %s: TF Serving cannot load it: %s", model_id, message)
            self.repository.update(model_id, {"status": FAILED, "served": False, "error": f"TensorFlow Serving cannot load it: {message}"})

    def queue_lost_trainings(self) -> None:
        """Queues the training of each model recorded without its job (the service stopped
        between the two); fails those whose uploaded script was lost with the request."""
        if self.trainings is None:
            return
        before = mongo.utc_now() - datetime.timedelta(seconds=self.limits.training_queue_grace_s)
        docs = self.repository.pending_trainings(before)
        queued = self.trainings.jobs_of(docs)
        for doc in docs:
            if doc["_id"] in queued:
                continue
            try:
                job = self.trainings.requeue(doc)
            except Exception:  # noqa: BLE001 - storage or database away: tried again at the next reconcile
                log.exception("model %s: its training was never queued, and queuing it failed; will retry", doc["_id"])
                continue
            if job is None:
                log.error("model %s: its training was never queued and its script is lost", doc["_id"])
                self.repository.update(doc["_id"], {"status": FAILED, "error": UNQUEUED_ERROR})
            else:
                log.warning("model %s: its training was never queued; queued now", doc["_id"])

    def restore_missing(self) -> int:
        """Copies back from object storage each served SavedModel missing from the repository."""
        restored = 0
        for doc in self.repository.served():
            name, version = serving_name(doc["_id"]), doc.get("version", 1)
            if self.serving.repository.has(name, version):
                continue
            try:
                with self.serving.workspace() as workspace:
                    packed = workspace / "saved_model.tar.gz"
                    self.store.download_to(doc["artifacts"]["saved_model"], packed)
                    archive.unpack_tree(packed, workspace / "saved_model")
                    self.serving.repository.install(name, version, workspace / "saved_model")
            except errors.NotFound:
                log.error("model %s: its SavedModel is missing from object storage too", doc["_id"])
                self._stop_serving(doc, "the served copy of this model was lost; upload it again")
                continue
            except errors.Unprocessable as exc:  # kept before graphs were checked: never served again
                log.error("model %s: its SavedModel is refused: %s", doc["_id"], exc.message)
                self._stop_serving(doc, f"this model can no longer be served: {exc.message}")
                continue
            log.info("model %s: SavedModel restored from object storage", doc["_id"])
            restored += 1
        return restored

    def _stop_serving(self, doc: dict, error: str) -> None:
        self.repository.update(doc["_id"], {"status": FAILED, "served": False, "error": error})
        self.serving.dirty = True
