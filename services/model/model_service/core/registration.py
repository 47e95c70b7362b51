"""Registering a model (one path for uploads and trained models): parse the label file, convert
the model into the served SavedModel in a child process (which also validates it), check labels
against the model's output, then allocate the id, keep the artifacts in object storage, install
the SavedModel into TF Serving's repository, apply the config and wait until TF Serving says
AVAILABLE; only then is the model `Trained`. A failure at any step removes everything written
so far (the model, its files, its config entry): an upload either becomes a served model or
leaves nothing behind. A registration whose process died is undone by `reconcile` once its
claim expires.
"""
from __future__ import annotations

import datetime
import logging
from pathlib import Path

from mlstudio.common import errors, mongo

from .. import archive, labels as label_files, preprocessing, uploads
from ..tfserving_repository import serving_name
from .shared import (CLASSIFICATION, MAX_DESCRIPTION, MAX_TITLE, PENDING, TRAINED, NewModel, Prepared, _text,
                     artifact_keys, flag, model_type)

log = logging.getLogger(__name__)


class Registration:
    """Uploading and registering models (a part of `ModelCore`)."""

    def upload(self, user_id: int, project_id: int, fields: dict, files: list[uploads.Upload]) -> dict:
        project = self.projects.get_project(project_id, user_id)
        new = self._new_model(project, project_id, user_id, fields, "upload")
        if len(files) != 2:
            raise errors.InvalidArgument("send two files named files: files[0] the model, files[1] its label file", code="files_required")
        with self.serving.workspace() as workspace:
            model_path = workspace / "upload"
            uploads.save(files[0], model_path, self.limits.max_model_bytes, "model file")
            label_path = workspace / "labels"
            uploads.save(files[1], label_path, label_files.MAX_LABEL_FILE_BYTES, "label file")
            return self.register(new, model_path, label_path.read_bytes(), workspace)

    def _new_model(self, project, project_id: int, user_id: int, fields: dict, source: str) -> NewModel:
        new = NewModel(
            user=user_id,
            project=project_id,
            title=_text("title", fields.get("title"), MAX_TITLE, required=True),
            description=_text("description", fields.get("description"), MAX_DESCRIPTION, required=False),
            type=model_type(fields.get("type"), default=project.type),
            preprocessing=preprocessing.mode(fields.get("preprocessing")),
            is_public=flag("isPublic", fields.get("isPublic")),
            source=source,
        )
        if new.type != project.type:
            raise errors.InvalidArgument(f"a {new.type} model cannot belong to a {project.type} project")
        return new

    def register(self, new: NewModel, model_path: Path, label_bytes: bytes, workspace: Path) -> dict:
        """Converts, checks, stores and serves a model; the new model, `Trained`."""
        prepared = self.prepare(new.type, new.preprocessing, model_path, label_bytes, workspace)
        model_id = self.repository.allocate_id()
        keys = artifact_keys(model_id, prepared.format, 1)
        now = mongo.utc_now()
        doc = self.repository.insert({
            "_id": model_id, "title": new.title, "description": new.description, "type": new.type,
            "user": new.user, "project": new.project, "isPublic": new.is_public, "create_time": now,
            "status": PENDING, "labels": prepared.labels, "input_shape": prepared.conversion.input_shape,
            "preprocessing": new.preprocessing, "version": 1, "metrics": {}, "error": None,
            "location": keys["model"], "label_location": keys["labels"], "artifacts": keys,
            "format": prepared.format, "source": new.source, "served": False,
            "claimed_until": now + datetime.timedelta(seconds=self.limits.registration_claim_s),
        })
        try:
            self._store_artifacts(keys, prepared.model_file, label_bytes, prepared.conversion.saved_model, workspace)
            self._serve(doc, prepared.conversion.saved_model)
        except BaseException:
            self._undo(doc)
            raise
        return self._registered(doc)

    def _registered(self, doc: dict) -> dict:
        """The model just registered; NotFound when it was deleted meanwhile (what the
        registration wrote after the delete's own clean-up goes too)."""
        current = self.repository.get(doc["_id"])
        if current is None:
            self._remove(doc)  # its training (if any) is this very registration: nothing to stop
            raise errors.NotFound(f"model {doc['_id']} not found: it was deleted while it was being registered")
        return self.public(current)

    def prepare(self, type_: str, mode: str, model_path: Path, label_bytes: bytes, workspace: Path) -> Prepared:
        """Parses the labels and converts the model; 4xx with the reason when they do not fit."""
        label_file = label_files.parse_label_file(label_bytes)
        if type_ == CLASSIFICATION and label_file.first_index != 0:
            raise errors.Unprocessable("the label file's class indexes must start at 0 for a classification model", code="bad_label_file")
        fmt = uploads.model_format(model_path)
        model_file = model_path.with_name(f"model.{uploads.extension(fmt)}")
        if model_file != model_path:
            model_path.replace(model_file)
        conversion = self.converter.convert(model_file, fmt, type_, mode, workspace)
        if type_ == CLASSIFICATION and conversion.output_size != len(label_file.labels):
            raise errors.Unprocessable(
                f"the label file names {len(label_file.labels)} classes but the model outputs {conversion.output_size} scores",
                code="labels_mismatch")
        return Prepared(fmt, model_file, label_file.labels, conversion)

    def _store_artifacts(self, keys: dict, model_path: Path, label_bytes: bytes, saved_model: Path, workspace: Path) -> None:
        with open(model_path, "rb") as stream:
            self.store.put_stream(keys["model"], stream)
        self.store.put_bytes(keys["labels"], label_bytes, "text/plain; charset=utf-8")
        packed = workspace / "saved_model.tar.gz"
        archive.pack_tree(saved_model, packed)
        with open(packed, "rb") as stream:
            self.store.put_stream(keys["saved_model"], stream, "application/gzip")

    def _serve(self, doc: dict, saved_model: Path) -> None:
        name, version = serving_name(doc["_id"]), doc["version"]
        self.serving.repository.install(name, version, saved_model)
        self.repository.update(doc["_id"], {"served": True})
        self.serving.publish(name, version)
        self.repository.update(doc["_id"], {"status": TRAINED}, unset=("claimed_until",))
        log.info("model %s is served as %s version %s", doc["_id"], name, version)
