"""MongoDB access for the project service's own `projects` collection."""
from __future__ import annotations


import datetime

import pymongo
from pymongo.database import Database

from mlstudio.common import mongo
from mlstudio.common.mongo import VISIBLE


class ProjectRepository(mongo.Repository):
    def __init__(self, db: Database):
        self.db = db
        self.projects = db.projects

    def ensure_indexes(self) -> None:
        mongo.declare_indexes(self.projects, [
            pymongo.IndexModel([("user", 1), ("_id", 1)], name="user_projects"),
            pymongo.IndexModel([("deleting", 1)], name="deleting", sparse=True),
        ])

    def create(self, user_id: int, title: str, description: str, type_: str, **settings) -> dict:
        """A new project; `settings` (such as `threshold`) are stored only when given."""
        project_id = self._run(lambda: mongo.next_id(self.db, "projects"))
        doc = {
            "_id": project_id,
            "title": title,
            "description": description,
            "type": type_,
            "user": user_id,
            "location": f"projects/{project_id}/",
            "create_time": mongo.utc_now(),
            **settings,
        }
        self._run(lambda: self.projects.insert_one(doc))
        return doc

    def list_for(self, user_id: int) -> list[dict]:
        return self._run(lambda: list(self.projects.find({"user": user_id, **VISIBLE}).sort("_id", 1)))

    def get(self, project_id: int) -> dict | None:
        return self._run(lambda: self.projects.find_one({"_id": project_id, **VISIBLE}))

    def update(self, project_id: int, changes: dict) -> dict | None:
        return self._run(lambda: self.projects.find_one_and_update(
            {"_id": project_id, **VISIBLE}, {"$set": changes}, return_document=pymongo.ReturnDocument.AFTER))

    def mark_deleting(self, project_id: int) -> None:
        self._run(lambda: self.projects.update_one({"_id": project_id}, {"$set": {"deleting": True}}))

    def mark_swept(self, project_id: int) -> None:
        """The other services deleted the project's data once (`swept_at`)."""
        self._run(lambda: self.projects.update_one({"_id": project_id}, {"$set": {"swept_at": mongo.utc_now()}}))

    def pending_deletions(self, final_sweep_after_s: float) -> list[tuple[int, bool]]:
        """(project id, swept once) of the deletions to work on now: never swept, or swept at
        least `final_sweep_after_s` ago (due for the final sweep)."""
        cutoff = mongo.utc_now() - datetime.timedelta(seconds=final_sweep_after_s)
        query = {"deleting": True, "$or": [{"swept_at": {"$exists": False}}, {"swept_at": {"$lte": cutoff}}]}
        return self._run(lambda: [(doc["_id"], "swept_at" in doc) for doc in self.projects.find(query, {"swept_at": 1})])

    def remove(self, project_id: int) -> None:
        self._run(lambda: self.projects.delete_one({"_id": project_id}))
