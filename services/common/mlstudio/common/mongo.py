"""MongoDB helpers: the client, atomic integer ids, index declaration, and the base of every
service's repository (database errors as `Unavailable`, the filter hiding records being deleted).

Public ids are integers, as in the original API. Each service allocates its own from a
`counters` collection with one atomic `$inc`, so concurrent creators never share an id.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import pymongo
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from . import errors

log = logging.getLogger(__name__)

T = TypeVar("T")

# A record marked `deleting` is being removed (its files first, the record last): every read
# but the sweep that finishes the removal leaves it out.
VISIBLE = {"deleting": {"$ne": True}}


def connect(uri: str, database: str, *, timeout_ms: int = 5000) -> Database:
    """A database handle; connects lazily, so a service can start before MongoDB is up."""
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, tz_aware=True)
    return client[database]


def next_id(db: Database, name: str) -> int:
    """The next integer id of the sequence `name` (1, 2, 3, ...), allocated atomically."""
    doc = db.counters.find_one_and_update(
        {"_id": name},
        {"$inc": {"seq": 1}},
        upsert=True,
        return_document=pymongo.ReturnDocument.AFTER,
    )
    return int(doc["seq"])


def reserve_ids(db: Database, name: str, count: int) -> list[int]:
    """`count` consecutive ids of the sequence `name`, allocated with one atomic update."""
    if count <= 0:
        return []
    doc = db.counters.find_one_and_update(
        {"_id": name},
        {"$inc": {"seq": count}},
        upsert=True,
        return_document=pymongo.ReturnDocument.AFTER,
    )
    last = int(doc["seq"])
    return list(range(last - count + 1, last + 1))


def declare_indexes(collection: Collection, indexes: list[pymongo.IndexModel]) -> None:
    """Creates the indexes a collection's queries need (a no-op when they exist)."""
    if indexes:
        collection.create_indexes(indexes)


def ping(db: Database) -> bool:
    """True when the database answers (used by /readyz)."""
    try:
        db.client.admin.command("ping")
        return True
    except PyMongoError:
        return False


def unavailable(error: PyMongoError) -> errors.Unavailable:
    log.warning("database error: %s", error)
    return errors.Unavailable("the database is unavailable, try again shortly")


def run(operation: Callable[[], T]) -> T:
    """`operation()`, one or more database calls; a database error becomes `Unavailable` (503,
    UNAVAILABLE: try again), logged, never a driver's exception. Other errors pass unchanged."""
    try:
        return operation()
    except PyMongoError as exc:
        raise unavailable(exc) from exc


class Repository:
    """Base of a service's MongoDB access: `self._run(lambda: ...)` around each database call."""

    @staticmethod
    def _run(operation: Callable[[], T]) -> T:
        return run(operation)


def utc_now():
    """Now, in UTC, at the millisecond precision MongoDB stores (so a created document and its
    stored copy print the same time)."""
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(moment) -> str:
    """ISO 8601 UTC with a Z, as the API shows times."""
    from datetime import timezone

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
