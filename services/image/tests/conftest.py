"""Fixtures of the image service's tests: a core wired to in-memory fakes (see
`image_fakes.build_world` for who owns what), and a throwaway `mongod` for the tests of what runs
on MongoDB."""
import socket
import subprocess
import time

import pymongo
import pytest
from image_fakes import World, build_world

from deploy.local.mongo import find_mongod


@pytest.fixture
def world() -> World:
    return build_world()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    port = free_port()
    dbpath = tmp_path_factory.mktemp("mongo")
    process = subprocess.Popen(
        [find_mongod(), "--dbpath", str(dbpath), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--wiredTigerCacheSizeGB", "0.25", "--setParameter", "diagnosticDataCollectionEnabled=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    uri = f"mongodb://127.0.0.1:{port}/"
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
    try:
        for _ in range(120):
            try:
                client.admin.command("ping")
                break
            except pymongo.errors.PyMongoError:
                if process.poll() is not None:
                    pytest.fail("mongod exited at start-up")
                time.sleep(0.25)
        else:
            pytest.fail("mongod did not start")
        yield uri
    finally:
        client.close()
        process.terminate()
        process.wait(30)
