"""Models trained on the server (`method=create`), as the model core sees them: recorded at once
as `Pending` and trained by the trainer worker (`model_service.trainer`), which hands the
result to `register_trained`: the same conversion, checks, storage and serving as an upload, on
the model already recorded. The training job's own life (status, progress, cancelling, log) is
`model_service.trainings`'; the work in the worker is `model_service.training`'s.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from mlstudio.common import errors, mongo

from .. import uploads
from ..tfserving_repository import serving_name
from .shared import CLASSIFICATION, PENDING, TRAINED, artifact_keys

log = logging.getLogger(__name__)


class TrainedModels:
    """Queuing, cancelling and registering trainings (a part of `ModelCore`)."""

    def create_training(self, user_id: int, project_id: int, fields: dict, files: list[uploads.Upload]) -> dict:
        """Records a model to be trained from the project's tagged images and queues its training;
        the model, `Pending`. 400 when the project has too few tags or images."""
        if self.trainings is None:
            raise errors.NotImplementedYet("training models on the server is not deployed here; train the model elsewhere "
                                           "and send it with method=upload", code="training_not_available")
        project = self.projects.get_project(project_id, user_id)
        new = self._new_model(project, project_id, user_id, fields, "training")
        if new.type != CLASSIFICATION:
            raise errors.InvalidArgument("training on the server makes Classification models; "
                                         "upload Detection models with method=upload", code="training_not_available")
        params = self.trainings.params(fields)
        script = self.trainings.read_script(files)
        self.trainings.check_dataset(project_id, user_id, params.include_unchecked)
        model_id = self.repository.allocate_id()
        doc = self.repository.insert({
            "_id": model_id, "title": new.title, "description": new.description, "type": new.type,
            "user": new.user, "project": new.project, "isPublic": new.is_public, "create_time": mongo.utc_now(),
            "status": PENDING, "labels": [], "input_shape": [], "preprocessing": new.preprocessing, "version": 1,
            "metrics": {}, "error": None, "location": "", "label_location": "", "artifacts": {}, "source": "training",
            "served": False,
            "training": {"params": params.to_dict(), "script": script is not None, "recipe": "script" if script is not None else params.recipe},
        })
        try:
            job = self.trainings.start(model_id, user_id, project_id, params, script, new.preprocessing)
        except BaseException:
            self._undo(doc)
            raise
        log.info("model %s: training queued", model_id)
        return self.public(doc, job)

    def _owned_training(self, model_id: int, user_id: int) -> dict:
        doc = self._readable(model_id, user_id)
        if doc["user"] != user_id or doc.get("source") != "training":
            raise errors.NotFound(f"model {model_id} has no training of yours")
        return doc

    def cancel_training(self, model_id: int, user_id: int) -> dict:
        """Stops the model's training (at once when queued, at the trainer's next check when running)."""
        doc = self._owned_training(model_id, user_id)
        if doc["status"] == TRAINED or self.trainings is None:
            raise errors.NotAcceptable(f"model {model_id} is not being trained", code="not_training")
        return self.public(doc, self.trainings.cancel(model_id))

    def training_log(self, model_id: int, user_id: int) -> str:
        """The training's output (its last part), for the model's owner only."""
        doc = self._owned_training(model_id, user_id)
        return self.trainings.log(doc["_id"]) if self.trainings is not None else ""

    def training_model(self, model_id: int) -> dict | None:
        """The record of a model being trained (None once it is deleted)."""
        return self.repository.get(model_id)

    def register_trained(self, model_id: int, model_file: Path, labels: list[str], metrics: dict,
                         training: dict | None = None) -> dict:
        """Converts, checks, stores and serves what the trainer produced, as an upload is; the
        model, `Trained`, with what the training did (`training`: held-out images and accuracy,
        time) added to its `training` record. Repeating it (a trainer that died while
        registering) does the same again. NotFound when the model was deleted meanwhile."""
        doc = self.training_model(model_id)
        if doc is None:
            raise errors.NotFound(f"model {model_id} not found")
        label_bytes = "\n".join(labels).encode()
        with self.serving.workspace() as workspace:
            source = workspace / "trained"
            shutil.copyfile(model_file, source)
            prepared = self.prepare(doc["type"], doc["preprocessing"], source, label_bytes, workspace)
            keys = artifact_keys(model_id, prepared.format, doc.get("version", 1))
            doc = self.repository.update(model_id, {
                "labels": prepared.labels, "input_shape": prepared.conversion.input_shape, "format": prepared.format,
                "location": keys["model"], "label_location": keys["labels"], "artifacts": keys, "metrics": dict(metrics),
                **{f"training.{name}": value for name, value in (training or {}).items()}})
            if doc is None or doc.get("deleting"):
                raise errors.NotFound(f"model {model_id} not found")
            self._store_artifacts(keys, prepared.model_file, label_bytes, prepared.conversion.saved_model, workspace)
            self._serve(doc, prepared.conversion.saved_model)
        return self._registered(doc)

    def abandon_training(self, model_id: int) -> None:
        """Removes what a training that ends failed or cancelled left: its served copy and
        trained files. The model's record, script and log stay, so its owner can read why."""
        doc = self.repository.get(model_id)
        if doc is None:
            self.store.delete_prefix(f"models/{model_id}/")  # deleted while training: its last log goes too
            return
        if doc["status"] == TRAINED:
            return  # registered by an attempt whose job was then given up: it stays served
        if doc.get("served"):
            self.repository.update(model_id, {"served": False})
            self.serving.withdraw(serving_name(model_id))
        for key in self.store.list_keys(f"models/{model_id}/"):
            if not key.endswith(("/train.py", "/training.log")):
                self.store.delete(key)
        self.repository.update(model_id, {"status": PENDING, "artifacts": {}, "location": "", "label_location": ""})
