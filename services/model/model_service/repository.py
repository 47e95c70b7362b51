"""MongoDB access for the model service's own `models` collection.

A model document keeps the API's field names (`isPublic`, `create_time`, ...) plus what the
service needs to serve it: `served` (its SavedModel is in TF Serving's repository and config),
`artifacts` (object-storage keys), `claimed_until` (an upload in progress), `deleting` (hidden,
its files are being removed).
"""
from __future__ import annotations

import pymongo
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from mlstudio.common import mongo
from mlstudio.common.mongo import VISIBLE
from mlstudio.common.vocabulary import PENDING, TRAINED


class ModelRepository(mongo.Repository):
    def __init__(self, db: Database):
        self.db = db
        self.models = db.models

    def ensure_indexes(self) -> None:
        mongo.declare_indexes(self.models, [
            pymongo.IndexModel([("project", 1), ("user", 1)], name="project_models"),
            pymongo.IndexModel([("isPublic", 1), ("type", 1)], name="public_models"),
            pymongo.IndexModel([("served", 1)], name="served"),
            pymongo.IndexModel([("deleting", 1)], name="deleting", sparse=True),
            pymongo.IndexModel([("claimed_until", 1)], name="registrations", sparse=True),
            pymongo.IndexModel([("status", 1), ("source", 1), ("create_time", 1)], name="trainings"),
            # One record per built-in model, however many replicas register it at once.
            pymongo.IndexModel([("builtin", 1)], name="builtins", unique=True,
                               partialFilterExpression={"builtin": {"$exists": True}}),
        ])

    def allocate_id(self) -> int:
        return self._run(lambda: mongo.next_id(self.db, "models"))

    def insert(self, doc: dict) -> dict:
        self._run(lambda: self.models.insert_one(doc))
        return doc

    def insert_builtin(self, doc: dict) -> bool:
        """Inserts a built-in model's record; False when one with its `builtin` key exists."""
        def insert() -> bool:
            try:
                self.models.insert_one(doc)
            except DuplicateKeyError:
                return False
            return True

        return self._run(insert)

    def builtin(self, key: str) -> dict | None:
        """The record of built-in model `key` (being deleted included)."""
        return self._run(lambda: self.models.find_one({"builtin": key}))

    def get(self, model_id: int) -> dict | None:
        return self._run(lambda: self.models.find_one({"_id": model_id, **VISIBLE}))

    def visible(self, project_id: int, user_id: int, model_type: str) -> list[dict]:
        """The project's models of this user, plus every trained public model, of `model_type`."""
        query = {
            **VISIBLE,
            "type": model_type,
            "$or": [{"project": project_id, "user": user_id}, {"isPublic": True, "status": TRAINED}],
        }
        return self._run(lambda: list(self.models.find(query).sort("_id", 1)))

    def replace_builtin(self, key: str, digest: str, changes: dict) -> dict | None:
        """Sets `changes` on built-in model `key` if it still holds the build `digest`; the
        record before the change, or None when another process changed it first."""
        return self._run(lambda: self.models.find_one_and_update({"builtin": key, "builtin_digest": digest}, {"$set": changes}))

    def update(self, model_id: int, changes: dict, unset: tuple[str, ...] = ()) -> dict | None:
        update = {"$set": changes}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        return self._run(lambda: self.models.find_one_and_update(
            {"_id": model_id}, update, return_document=pymongo.ReturnDocument.AFTER))

    def mark_deleting(self, model_id: int) -> None:
        self._run(lambda: self.models.update_one({"_id": model_id}, {"$set": {"deleting": True, "served": False}}))

    def remove(self, model_id: int) -> None:
        self._run(lambda: self.models.delete_one({"_id": model_id}))

    def of_project(self, project_id: int) -> list[dict]:
        """Every model of the project, those being deleted included."""
        return self._run(lambda: list(self.models.find({"project": project_id})))

    def pending_deletions(self) -> list[dict]:
        return self._run(lambda: list(self.models.find({"deleting": True})))

    def served(self) -> list[dict]:
        """Models whose SavedModel TF Serving must hold."""
        return self._run(lambda: list(self.models.find({"served": True, **VISIBLE}, {"_id": 1, "version": 1, "artifacts": 1})))

    def pending_trainings(self, created_before) -> list[dict]:
        """Trained models still `Pending` (queued, or never queued) recorded before `created_before`."""
        query = {"status": PENDING, "source": "training", "create_time": {"$lt": created_before}, **VISIBLE}
        return self._run(lambda: list(self.models.find(query)))

    def abandoned_registrations(self, now) -> list[dict]:
        """Registrations whose process stopped before finishing (their claim ran out)."""
        return self._run(lambda: list(self.models.find({"claimed_until": {"$lt": now}, **VISIBLE})))
