"""MongoDB access for the video service's own `videos` collection.

A video being deleted is first marked `deleting`, which hides it from every read; the record
goes only when its frames, file and job are gone, so a deletion that stops half-way is finished
by the periodic sweep (`pending_deletions`). Likewise a record is written `job_pending` and the
mark cleared once its job is queued, so an upload that stopped in between is found by the sweep
(`awaiting_job`) and its job queued then.
"""
from __future__ import annotations

from datetime import datetime

import pymongo
from pymongo.database import Database

from mlstudio.common import mongo
from mlstudio.common.mongo import VISIBLE


class VideoRepository(mongo.Repository):
    def __init__(self, db: Database):
        self.db = db
        self.videos = db.videos

    def ensure_indexes(self) -> None:
        mongo.declare_indexes(self.videos, [
            pymongo.IndexModel([("project", 1), ("_id", 1)], name="project_videos"),
            pymongo.IndexModel([("deleting", 1)], name="deleting", sparse=True),
            pymongo.IndexModel([("job_pending", 1)], name="job_pending", sparse=True),
        ])

    def new_id(self) -> int:
        return self._run(lambda: mongo.next_id(self.db, "videos"))

    def insert(self, doc: dict) -> dict:
        self._run(lambda: self.videos.insert_one(doc))
        return doc

    def get(self, video_id: int) -> dict | None:
        return self._run(lambda: self.videos.find_one({"_id": video_id, **VISIBLE}))

    def list_for_project(self, project_id: int, user_id: int) -> list[dict]:
        return self._run(lambda: list(self.videos.find({"project": project_id, "user": user_id, **VISIBLE}).sort("_id", 1)))

    def update(self, video_id: int, changes: dict) -> None:
        self._run(lambda: self.videos.update_one({"_id": video_id}, {"$set": changes}))

    def mark_deleting(self, video_id: int) -> None:
        self._run(lambda: self.videos.update_one({"_id": video_id}, {"$set": {"deleting": True}}))

    def mark_project_deleting(self, project_id: int) -> list[dict]:
        """Hides every video of the project; returns them all (including ones already hidden)."""
        self._run(lambda: self.videos.update_many({"project": project_id}, {"$set": {"deleting": True}}))
        return self._run(lambda: list(self.videos.find({"project": project_id})))

    def pending_deletions(self) -> list[dict]:
        return self._run(lambda: list(self.videos.find({"deleting": True})))

    def awaiting_job(self, created_until: datetime) -> list[dict]:
        """Visible videos written at or before `created_until` whose job was never marked queued."""
        return self._run(lambda: list(self.videos.find({"job_pending": True, "create_time": {"$lte": created_until}, **VISIBLE})))

    def job_queued(self, video_id: int) -> None:
        self._run(lambda: self.videos.update_one({"_id": video_id}, {"$unset": {"job_pending": ""}}))

    def get_any(self, video_id: int) -> dict | None:
        """The record even while it is being deleted (for the worker and the sweep)."""
        return self._run(lambda: self.videos.find_one({"_id": video_id}))

    def remove(self, video_id: int) -> None:
        self._run(lambda: self.videos.delete_one({"_id": video_id}))
