"""Registers the built-in pretrained models (catalog.MODELS) as public models at start-up.

Each is one model record found by its `builtin` key (a unique index: replicas starting together
insert it once), owned by no user (`SYSTEM_USER`, an id no user has) in no project, public, of
its catalog type, so it is listed in every project of that type and used like any other model;
nobody may delete it (core.delete refuses). Its SavedModel and labels are kept in object storage
like an upload's, so `reconcile` restores them into a fresh TF Serving.

Registration only writes the record, the stored files and TF Serving's repository; it does not
talk to TF Serving: the start-up reconcile that follows applies the config (and keeps trying
while TF Serving is away). A record whose `builtin_digest` (the sha256 of the converted model's
stamp, which lists the sha256 of each of its files) matches is left alone, so a restart costs
one stamp check; a rebuilt model (new conversion) is stored and served as the record's next
version. Where the converted models are missing the service starts without them, saying which
command makes them.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import shutil
from pathlib import Path

from mlstudio.common import mongo
from mlstudio.common.vocabulary import PENDING, TRAINED

from .. import archive
from ..tfserving_repository import serving_name
from . import catalog

log = logging.getLogger(__name__)

SYSTEM_USER = 0  # user ids start at 1: no user owns a built-in model
SYSTEM_PROJECT = 0
SOURCE = "builtin"
FORMAT = "savedmodel"


def digest(stamp: dict) -> str:
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()


def keys(model_id: int, version: int) -> dict:
    """Object-storage keys of a built-in model's files (no model file: it has no download)."""
    return {"labels": f"models/{model_id}/labels.txt", "saved_model": f"models/{model_id}/v{version}/saved_model.tar.gz"}


def register_all(core, cache: Path, models=catalog.MODELS) -> list[int]:
    """Registers every built-in model whose converted copy is in `cache`; their ids. One that
    fails is logged and left out (the next start tries again); the others still register."""
    registered = []
    for model in models:
        stamp = catalog.read_stamp(model, cache)
        if stamp is None:
            log.warning("built-in model %r is absent: its converted copy is missing or stale under PRETRAINED_DIR; "
                        "run `make pretrained` (python -m model_service.pretrained fetch-and-convert, which fetches %s) "
                        "and restart the model service", model.name, model.source.spec)
            continue
        try:
            registered.append(register(core, model, catalog.model_dir(model, cache), digest(stamp)))
        except Exception:  # noqa: BLE001 - the service runs without it; the next start tries again
            log.exception("built-in model %r could not be registered; the next start tries again", model.name)
    return registered


def register_missing(core, cache: Path, models=catalog.MODELS) -> list[int]:
    """Registers the built-in models that have no record although their converted copy is
    there: one whose start-up registration failed (the database away) or was abandoned (its
    process died, and reconcile removed the half-done record). Two look-ups when all are there,
    so the reconcile loop runs it every time."""
    missing = [model for model in models
               if core.repository.builtin(model.key) is None and (catalog.model_dir(model, cache) / catalog.STAMP).is_file()]
    return register_all(core, cache, missing) if missing else []


def _fields(model: catalog.PretrainedModel, directory: Path, build: str) -> dict:
    fields = {
        "title": model.name, "type": model.model_type,
        "description": f"Built into the studio: pretrained weights from the {model.source.spec} ({model.source.licence}).",
        "labels": (directory / "labels.txt").read_text().splitlines(), "input_shape": list(model.input_shape),
        "preprocessing": "raw", "builtin_digest": build,
    }
    if model.resize:
        fields["resize"] = model.resize
    if model.threshold:
        fields["threshold"] = model.threshold
    return fields


def register(core, model: catalog.PretrainedModel, directory: Path, build: str) -> int:
    """Records, stores and installs one built-in model (nothing when it already is); its id."""
    doc = core.repository.builtin(model.key)
    if doc is not None and doc.get("builtin_digest") == build:
        return doc["_id"]
    if doc is None:
        return _register_new(core, model, directory, build)
    return _upgrade(core, model, directory, build, doc)


def _register_new(core, model, directory: Path, build: str) -> int:
    model_id = core.repository.allocate_id()
    artifacts = keys(model_id, 1)
    now = mongo.utc_now()
    doc = {
        "_id": model_id, **_fields(model, directory, build), "user": SYSTEM_USER, "project": SYSTEM_PROJECT,
        "isPublic": True, "create_time": now, "status": PENDING, "version": 1, "metrics": {}, "error": None,
        "location": "", "label_location": artifacts["labels"], "artifacts": artifacts, "format": FORMAT,
        "source": SOURCE, "served": False, "builtin": model.key,
        # Abandoned (the process died half-way), reconcile removes it and the next start registers again.
        "claimed_until": now + datetime.timedelta(seconds=core.limits.registration_claim_s),
    }
    if not core.repository.insert_builtin(doc):
        found = core.repository.builtin(model.key)
        log.info("built-in model %r is registered by another process (model %s)", model.name, found and found["_id"])
        return found["_id"] if found else model_id
    try:
        _store_and_install(core, model_id, 1, directory, artifacts)
        core.repository.update(model_id, {"served": True, "status": TRAINED}, unset=("claimed_until",))
    except BaseException:
        core._undo(doc)
        raise
    core.serving.dirty = True  # the start-up reconcile makes TF Serving load it
    log.info("built-in model %r registered as model %s", model.name, model_id)
    return model_id


def _upgrade(core, model, directory: Path, build: str, doc: dict) -> int:
    """A new build of a registered model: its files as the next version, then the record
    switched over only if no other process did it first (the same build, the same files)."""
    model_id, version = doc["_id"], doc.get("version", 1) + 1
    artifacts = keys(model_id, version)
    _store_and_install(core, model_id, version, directory, artifacts)
    changes = {**_fields(model, directory, build), "version": version, "artifacts": artifacts,
               "label_location": artifacts["labels"], "served": True, "status": TRAINED, "error": None}
    if core.repository.replace_builtin(model.key, doc.get("builtin_digest"), changes) is not None:
        old = doc.get("artifacts", {}).get("saved_model")
        if old and old != artifacts["saved_model"]:
            core.store.delete(old)
        log.info("built-in model %r (model %s) upgraded to version %s", model.name, model_id, version)
    core.serving.dirty = True
    return model_id


def _store_and_install(core, model_id: int, version: int, directory: Path, artifacts: dict) -> None:
    core.store.put_bytes(artifacts["labels"], (directory / "labels.txt").read_bytes(), "text/plain; charset=utf-8")
    with core.serving.workspace() as workspace:
        packed = workspace / "saved_model.tar.gz"
        # Not compressed: every stack start stores them, and gzip -9 of their weights took 24 s
        # of a loaded 2-core machine for a third less bytes (stored: 0.4 s, 35 MiB).
        archive.pack_tree(directory / "saved_model", packed, compresslevel=0)
        with open(packed, "rb") as stream:
            core.store.put_stream(artifacts["saved_model"], stream, "application/gzip")
        copy = workspace / "saved_model"
        shutil.copytree(directory / "saved_model", copy)
        core.serving.repository.install(serving_name(model_id), version, copy)
