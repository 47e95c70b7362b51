"""MongoDB access for the image service's own `images` collection.

One document per image: `_id` (the public integer id), `project`, `user`, `tag`, `key` (the
object-store key of its bytes), `content_type`, `size`, `sha256`, `width`, `height`, `title`,
`description`, `video`/`frame_index`/`timestamp_ms` (frames), `score`, `detections`, `is_train`
(false: waiting for review; documents written before it was kept have none and count as checked,
since uploads by a person were the common case and it keeps their training sets as they were),
`model_label` (true while the label is a model's, so re-labelling may replace it; a person's
change sets it false),
`phash` (perceptual hash, `mlstudio.common.image_hash`; older images get it when first needed),
`create_time`, and `deleting` while a delete is under way (such documents are hidden).
Uploaded images also carry `distinct_bytes: true`, which puts them in the unique index on
(project, sha256): the same bytes are stored once per project even when two uploads race. Frames
stay out of it (a static video has identical frames, each kept under its own frame index), and so
do documents written before the index existed, which may hold duplicates already.
"""
from __future__ import annotations

from collections.abc import Iterator

import pymongo
from mlstudio.common import mongo
from mlstudio.common.mongo import VISIBLE
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

DUPLICATE_KEY = 11000


def _selector(project_id=None, tag=None, video_id=None, image_id=None) -> dict:
    """The documents a delete or a listing is about; at least one criterion must be given."""
    selector = {}
    if image_id is not None:
        selector["_id"] = image_id
    if project_id is not None:
        selector["project"] = project_id
    if tag is not None:
        selector["tag"] = tag
    if video_id is not None:
        selector["video"] = video_id
    if not selector:
        raise ValueError("a selector needs at least one criterion")
    return selector


class ImageRepository(mongo.Repository):
    def __init__(self, db: Database):
        self.db = db
        self.images = db.images

    def ensure_indexes(self) -> None:
        mongo.declare_indexes(self.images, [
            # A project's images, in id order (list all, pagination, StreamDataset, delete all).
            pymongo.IndexModel([("project", 1), ("_id", 1)], name="project_images"),
            # One tag's images, the tag summary, rename/merge and delete by tag.
            pymongo.IndexModel([("project", 1), ("tag", 1), ("_id", 1)], name="project_tag_images"),
            # A video's frames; unique so a retried frame batch creates no duplicates. Uploaded
            # images (no video) are outside the partial index.
            pymongo.IndexModel([("video", 1), ("frame_index", 1)], name="video_frames", unique=True,
                               partialFilterExpression={"video": {"$gt": 0}}),
            # An upload's bytes once per project (see the module docstring). A delete unsets the
            # flag as it hides the image, so the same bytes can be uploaded again meanwhile.
            pymongo.IndexModel([("project", 1), ("sha256", 1)], name="project_distinct_bytes", unique=True,
                               partialFilterExpression={"distinct_bytes": True}),
            # The review list: a project's images waiting for review, lowest score first.
            pymongo.IndexModel([("project", 1), ("is_train", 1), ("score", 1), ("_id", 1)], name="project_review"),
            # A project's (or a tag's, filtered) images by score, lowest first (`sort=score`).
            pymongo.IndexModel([("project", 1), ("score", 1), ("_id", 1)], name="project_scores"),
            # Deletes left unfinished, for the sweep.
            pymongo.IndexModel([("deleting", 1)], name="deleting", partialFilterExpression={"deleting": True}),
        ])

    def reserve_ids(self, count: int) -> list[int]:
        return self._run(lambda: mongo.reserve_ids(self.db, "images", count))

    def insert_frames(self, docs: list[dict]) -> set[int]:
        """Inserts frame documents; returns the ids of those whose (video, frame_index) already
        existed (a concurrent retry stored them first). Other failures raise."""
        return self._insert_new(docs)

    def insert_uploads(self, docs: list[dict]) -> set[int]:
        """Inserts uploaded images; returns the ids of those whose bytes the project already
        holds (a concurrent upload stored them first). Other failures raise."""
        return self._insert_new(docs)

    def _insert_new(self, docs: list[dict]) -> set[int]:
        """Inserts every document a unique index lets in; returns the ids of the others."""
        if not docs:
            return set()
        try:
            self.images.insert_many(docs, ordered=False)
            return set()
        except BulkWriteError as exc:
            errors_ = exc.details.get("writeErrors", [])
            if any(error.get("code") != DUPLICATE_KEY for error in errors_) or exc.details.get("writeConcernErrors"):
                raise mongo.unavailable(exc) from exc
            return {docs[error["index"]]["_id"] for error in errors_}
        except PyMongoError as exc:
            raise mongo.unavailable(exc) from exc

    def delete_ids(self, ids: list[int]) -> None:
        if ids:
            self._run(lambda: self.images.delete_many({"_id": {"$in": list(ids)}}))

    def get(self, image_id: int, *, include_deleting: bool = False) -> dict | None:
        query = {"_id": image_id} if include_deleting else {"_id": image_id, **VISIBLE}
        return self._run(lambda: self.images.find_one(query))

    def find_by_sha256(self, project_id: int, digests: list[str]) -> dict[str, dict]:
        """The project's oldest visible image per SHA-256 among `digests`."""
        query = {"project": project_id, "sha256": {"$in": list(digests)}, **VISIBLE}
        found: dict[str, dict] = {}
        for doc in self._run(lambda: list(self.images.find(query).sort("_id", 1))):
            found.setdefault(doc["sha256"], doc)
        return found

    def get_many(self, image_ids: list[int]) -> list[dict]:
        """The visible images among `image_ids`, in id order."""
        return self._run(lambda: list(self.images.find({"_id": {"$in": list(image_ids)}, **VISIBLE}).sort("_id", 1)))

    def set_phash(self, image_id: int, phash: str) -> None:
        """Records the perceptual hash of an image stored before hashes were kept."""
        self._run(lambda: self.images.update_one({"_id": image_id}, {"$set": {"phash": phash}}))

    def find_frames(self, video_id: int, frame_indexes: list[int]) -> list[dict]:
        query = {"video": video_id, "frame_index": {"$in": list(frame_indexes)}, **VISIBLE}
        return self._run(lambda: list(self.images.find(query)))

    def list(self, *, project_id: int, tag: str | None = None, video_id: int | None = None,
             limit: int | None = None, offset: int = 0, after_id: int | None = None,
             review: bool = False, by_score: bool = False) -> list[dict]:
        """A project's images (optionally one tag's or one video's; with `review`, only those
        waiting for review), oldest first, a video's in frame order; with `by_score`, lowest
        score first (no score first). `after_id` (id order only) starts after that id: a keyset
        page, read from the index where it starts, where `offset` walks past every skipped entry."""
        query = {**_selector(project_id=project_id, tag=tag, video_id=video_id), **VISIBLE}
        if review:
            query["is_train"] = False
        if after_id is not None:
            if video_id is not None or by_score:
                raise ValueError("after_id pages lists in id order; a video's frames are in frame order and sort=score in score order")
            query["_id"] = {"$gt": after_id}
        order = [("frame_index", 1), ("_id", 1)] if video_id is not None else [("_id", 1)]
        if by_score:
            order = [("score", 1), ("_id", 1)]

        def find():
            cursor = self.images.find(query).sort(order).skip(offset)
            return list(cursor.limit(limit) if limit else cursor)

        return self._run(find)

    def list_by_video(self, video_id: int) -> list[dict]:
        """A video's frames in any project (used to find the video's project)."""
        return self._run(lambda: list(self.images.find({"video": video_id, **VISIBLE}).sort([("frame_index", 1), ("_id", 1)])))

    def iterate(self, project_id: int, batch_size: int = 200, *, tag: str | None = None, checked_only: bool = False,
                video_id: int | None = None, where: dict | None = None, fields: list[str] | None = None) -> Iterator[dict]:
        """Every image of a project (of one tag, of one video, only checked ones, those matching
        `where`), in id order, read in batches (the training stream, exports, re-labelling);
        `fields` limits what is read of each."""
        last = 0
        selector = {"project": project_id, **({"tag": tag} if tag is not None else {}),
                    **({"video": video_id} if video_id is not None else {}),
                    **({"is_train": {"$ne": False}} if checked_only else {}), **(where or {}), **VISIBLE}
        while True:
            query = {**selector, "_id": {"$gt": last}}
            batch = self._run(lambda query=query: list(self.images.find(query, fields).sort("_id", 1).limit(batch_size)))
            yield from batch
            if len(batch) < batch_size:
                return
            last = batch[-1]["_id"]

    def tag_summary(self, project_id: int) -> list[dict]:
        """`{tag, count, first}` per tag, `first` being the tag's oldest visible image, by tag name.

        The counts come from the (project, tag, _id) index alone (a covered aggregation: no
        document is read), less the images being deleted (found through their own small index);
        then only each tag's first image is read, with one query."""
        counted = [{"$match": {"project": project_id}}, {"$sort": {"tag": 1, "_id": 1}},
                   {"$group": {"_id": "$tag", "count": {"$sum": 1}, "first": {"$first": "$_id"}}}]
        hidden = [{"$match": {"project": project_id, "deleting": True}}, {"$group": {"_id": "$tag", "count": {"$sum": 1}}}]

        def read():
            totals = list(self.images.aggregate(counted, hint="project_tag_images"))
            being_deleted = {row["_id"]: row["count"] for row in self.images.aggregate(hidden)}
            tags = {row["_id"]: row for row in totals if row["count"] > being_deleted.get(row["_id"], 0)}
            firsts = {doc["_id"]: doc for doc in self.images.find({"_id": {"$in": [row["first"] for row in tags.values()]}, **VISIBLE})}
            rows = []
            for tag in sorted(tags):
                first = firsts.get(tags[tag]["first"])
                if first is None or first["tag"] != tag:
                    # The tag's oldest image is being deleted (or moved meanwhile): its oldest
                    # visible one, through the index.
                    first = self.images.find_one({"project": project_id, "tag": tag, **VISIBLE}, sort=[("_id", 1)])
                if first is not None:
                    rows.append({"tag": tag, "count": tags[tag]["count"] - being_deleted.get(tag, 0), "first": first})
            return rows

        return self._run(read)

    def change_labels(self, image_id: int, changes: dict) -> dict | None:
        """Sets an image's tag, detections, score or checked state in one update; the image
        after it, or None when it is gone."""
        return self._run(lambda: self.images.find_one_and_update(
            {"_id": image_id, **VISIBLE}, {"$set": changes}, return_document=pymongo.ReturnDocument.AFTER))

    def relabel(self, image_id: int, changes: dict, condition: dict) -> bool:
        """A model's new labels for an image, written only while it still matches `condition`
        (a person who checked it meanwhile wins); whether it was written."""
        result = self._run(lambda: self.images.update_one({"_id": image_id, **condition, **VISIBLE}, {"$set": changes}))
        return result.matched_count == 1

    def rename_tag(self, project_id: int, old: str, new: str) -> int:
        """Moves every image of tag `old` to `new` with one update; returns how many moved."""
        result = self._run(lambda: self.images.update_many({"project": project_id, "tag": old, **VISIBLE}, {"$set": {"tag": new}}))
        return result.modified_count

    def mark_deleting(self, **criteria) -> list[dict]:
        """Hides the selected images (those already being deleted included) and returns their
        ids and keys, so the caller can remove their bytes and then the documents."""
        selector = _selector(**criteria)
        self._run(lambda: self.images.update_many(selector, {"$set": {"deleting": True}, "$unset": {"distinct_bytes": ""}}))
        return self._run(lambda: list(self.images.find({**selector, "deleting": True}, {"_id": 1, "key": 1})))

    def pending_deletes(self, limit: int = 1000) -> list[dict]:
        """Images whose delete stopped half-way (ids and keys)."""
        return self._run(lambda: list(self.images.find({"deleting": True}, {"_id": 1, "key": 1}).limit(limit)))


class DatasetJobRecords(mongo.Repository):
    """One collection of dataset jobs' records (`exports`, `imports`): one document per export
    or import of a project (`_id` the public id, `project`, `user`, `format`, its options, `job`,
    `key` of the zip, what it produced, `create_time`, `expires_at`)."""

    name = ""

    def __init__(self, db: Database):
        self.db = db
        self.records = db[self.name]

    def ensure_indexes(self) -> None:
        mongo.declare_indexes(self.records, [
            pymongo.IndexModel([("project", 1), ("_id", -1)], name=f"project_{self.name}"),
            pymongo.IndexModel([("expires_at", 1)], name="expiry"),
        ])

    def next_id(self) -> int:
        return self._run(lambda: mongo.next_id(self.db, self.name))

    def insert(self, doc: dict) -> None:
        self._run(lambda: self.records.insert_one(doc))

    def get(self, record_id: int) -> dict | None:
        return self._run(lambda: self.records.find_one({"_id": record_id}))

    def list(self, project_id: int) -> list[dict]:
        return self._run(lambda: list(self.records.find({"project": project_id}).sort("_id", -1)))

    def update(self, record_id: int, changes: dict) -> None:
        self._run(lambda: self.records.update_one({"_id": record_id}, {"$set": changes}))

    def expired(self, now, limit: int = 100) -> list[dict]:
        return self._run(lambda: list(self.records.find({"expires_at": {"$lt": now}}).limit(limit)))

    def delete(self, record_id: int) -> None:
        self._run(lambda: self.records.delete_one({"_id": record_id}))


class ExportRepository(DatasetJobRecords):
    name = "exports"


class ImportRepository(DatasetJobRecords):
    name = "imports"


class RelabelRepository(DatasetJobRecords):
    """Re-labelling runs (`relabels.py`): model, scope, tag, video, threshold, job."""

    name = "relabels"
