"""Deleting a model everywhere: hidden at once (`deleting`), then its served copy, files and
record removed. A delete that fails half-way (object storage or TF Serving's repository away,
whatever the error) stays marked and is finished by `reconcile`.
"""
from __future__ import annotations

import logging

from mlstudio.common import errors

from ..tfserving_repository import serving_name
from ..user_messages import without_paths

log = logging.getLogger(__name__)


class Removal:
    """Deleting models, and undoing failed registrations (a part of `ModelCore`)."""

    def delete(self, model_id: int, user_id: int) -> None:
        doc = self._readable(model_id, user_id)
        if doc.get("builtin"):
            raise errors.PermissionDenied(f"model {model_id} is built into the studio: it cannot be deleted", code="builtin_model")
        if doc["user"] != user_id:
            raise errors.PermissionDenied(f"model {model_id} is public but not yours: only its owner can delete it")
        self._discard(doc)

    def delete_project_data(self, project_id: int) -> int:
        """Deletes every model of the project; Unavailable (so the caller retries) if one is
        unfinished. Those not finished stay marked, and reconcile finishes them meanwhile."""
        docs = self.repository.of_project(project_id)
        for doc in docs:
            self.repository.mark_deleting(doc["_id"])
        if self.evaluations is not None:
            self.evaluations.forget_project(project_id)  # other users' public models evaluated here too
        for doc in docs:
            try:
                self._stop_training(doc)
                self._finish_removal(doc)
            except errors.DomainError:
                raise
            except Exception as exc:  # a backend's own error: the caller sees a retryable one
                raise errors.Unavailable(f"model {doc['_id']} is not removed yet: {without_paths(str(exc))}") from exc
        return len(docs)

    def _stop_training(self, doc: dict) -> None:
        if doc.get("source") == "training" and self.trainings is not None:
            self.trainings.stop(doc["_id"])

    def _discard(self, doc: dict) -> None:
        """Hides the model at once (an error here is the caller's: nothing was deleted), then
        removes it everywhere; whatever fails then is left to reconcile, which finds the model
        still marked and tries again."""
        self.repository.mark_deleting(doc["_id"])
        self._remove(doc, stop_training=True)

    def _remove(self, doc: dict, *, stop_training: bool = False) -> None:
        """Removes a model marked `deleting` everywhere; a failure is logged, not raised."""
        try:
            if stop_training:
                self._stop_training(doc)
            self._finish_removal(doc)
        except errors.DomainError as exc:
            log.warning("model %s: removal unfinished, will retry: %s", doc["_id"], exc.message)
        except Exception:  # noqa: BLE001 - a backend's own error (storage, files): the model stays marked, retried
            log.exception("model %s: removal unfinished, will retry", doc["_id"])

    def _undo(self, doc: dict) -> None:
        """Removes a registration that failed; a failure here is left to reconcile, and never
        hides the error that made the registration fail."""
        try:
            self._discard(doc)
        except Exception:  # noqa: BLE001 - the model stays marked (or claimed) and reconcile finishes it
            log.exception("model %s: undoing the failed registration failed", doc["_id"])

    def _finish_removal(self, doc: dict) -> None:
        """Removes the served copy, then the files, then the record: a failure leaves the record
        (marked `deleting`) for the next attempt."""
        self.serving.withdraw(serving_name(doc["_id"]))
        if self.evaluations is not None:
            self.evaluations.forget_model(doc["_id"])
        self.store.delete_prefix(f"models/{doc['_id']}/")
        self.repository.remove(doc["_id"])
        log.info("model %s removed", doc["_id"])
