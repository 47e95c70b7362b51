"""Restart-safe background jobs in MongoDB, claimed by worker processes with a lease.

Long work (splitting a video into frames, training a model) is a job document in the owning
service's own database. Workers claim one with `find_one_and_update`, which atomically takes a
job that is queued, or running under a lease that has expired (its worker died), and writes the
new owner and lease expiry. While working, a heartbeat thread renews the lease; progress and a
checkpoint are written as the work advances. A crashed worker's job is claimed again once its
lease expires and resumes from its checkpoint; the work itself must be idempotent (for frames:
keyed by video id + frame index) so that a batch done twice creates nothing twice.

Every time comparison uses the database server's clock (`$$NOW`), so workers on machines with
skewed clocks agree on whose lease has expired.

Job states: queued -> running -> done | failed | cancelled. A running job may go back to queued
(a failure to retry later, or a worker that stops gracefully). `attempts` counts the claims that
ended badly for the job itself (its worker died, its handler crashed); a job claimed more than
`max_attempts` times is given up as failed.

Something the job needs that is not up (a peer service, object storage: the handler raises
`errors.Unavailable`) is not the job's fault, so it uses up no attempt: the job goes back to the
queue, due again after a growing delay (doubling from `retry_delay_s`, at most
`max_dependency_delay_s`), and its `waiting` says why, since when and when it tries next, for the
owning service to show. Waiting is bounded: a job that has waited `dependency_wait_s` without
progress fails with the reason. The work done so far stays (its checkpoint), so the next try
resumes from there; progress clears `waiting`.

Cancelling never leaves partial output behind. A job that no worker ever started has none, so it
is cancelled at once. Any other job is flagged `cancel_requested`: its live worker stops at its
next check; a job without one (queued again, or its worker died) is claimed by the next free
worker only to run its handler's `cleanup`, and then it is cancelled. A cleanup that fails is
tried again later, so a cancelled job is always a cleaned-up one.

A worker runs up to `slots` jobs at once, each in a thread of its own with its own lease (a slot's
owner name is the worker's, `#<slot>` appended past the first): a job's heartbeat, progress,
cancel and release are its own, and a worker that dies leaves each of its jobs to be claimed
again once that job's lease expires. The jobs of one worker share its process's CPUs; their
threads get fair turns from the operating system (the work they do, decoding and gRPC calls,
mostly runs outside the GIL).
"""
from __future__ import annotations

import logging
import queue as queue_mod
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pymongo
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from . import errors, metrics, mongo

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
MAX_RETRY_DELAY_S = 600.0
DEPENDENCY_WAIT_S = 3600.0
MAX_DEPENDENCY_DELAY_S = 60.0


class LeaseLost(Exception):
    """This worker no longer owns the job (its lease expired and another worker took it)."""


class JobCancelled(Exception):
    """Someone asked for the job to stop (for instance its video is being deleted)."""


class WorkerStopping(Exception):
    """The worker process is shutting down; the job goes back to the queue unharmed."""


class JobFailed(Exception):
    """The job cannot succeed (undecodable input, a model that is gone...). `message` is shown
    to a person as the job's error; the job is not retried."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Job:
    """A snapshot of one job document."""

    id: str
    kind: str
    payload: dict
    status: str
    attempts: int
    max_attempts: int
    owner: str | None
    lease_expires: datetime | None
    progress: dict
    checkpoint: dict
    error: str
    result: dict
    cancel_requested: bool
    created: datetime | None = None
    updated: datetime | None = None
    waiting: dict = field(default_factory=dict)  # {reason, since, retry_at, waits} while a dependency is down

    @classmethod
    def from_doc(cls, doc: Mapping) -> Job:
        return cls(
            id=doc["_id"],
            kind=doc["kind"],
            payload=dict(doc.get("payload") or {}),
            status=doc["status"],
            attempts=int(doc.get("attempts", 0)),
            max_attempts=int(doc.get("max_attempts", 1)),
            owner=doc.get("owner"),
            lease_expires=doc.get("lease_expires"),
            progress=dict(doc.get("progress") or {"done": 0, "total": 0}),
            checkpoint=dict(doc.get("checkpoint") or {}),
            error=doc.get("error") or "",
            result=dict(doc.get("result") or {}),
            cancel_requested=bool(doc.get("cancel_requested")),
            created=doc.get("created"),
            updated=doc.get("updated"),
            waiting=dict(doc.get("waiting") or {}),
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def exhausted(self) -> bool:
        """Claimed more often than allowed: earlier attempts kept dying."""
        return self.attempts > self.max_attempts

    @property
    def waited_s(self) -> float:
        """How long the job has been waiting for a dependency, as of its last write (both times
        are the database server's clock); 0 when it is not waiting."""
        since = self.waiting.get("since")
        if since is None or self.updated is None:
            return 0.0
        return max(0.0, (self.updated - since).total_seconds())


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _lease_expired() -> dict:
    return {"$expr": {"$lt": ["$lease_expires", "$$NOW"]}}


class JobQueue(mongo.Repository):
    """The jobs of one service, in one collection of its database."""

    def __init__(self, collection: Collection, *, lease_s: float = 30.0, max_attempts: int = 3, retry_delay_s: float = 5.0,
                 dependency_wait_s: float = DEPENDENCY_WAIT_S, max_dependency_delay_s: float = MAX_DEPENDENCY_DELAY_S):
        if lease_s <= 0 or max_attempts < 1:
            raise ValueError("lease_s must be positive and max_attempts at least 1")
        if dependency_wait_s < 0 or max_dependency_delay_s <= 0:
            raise ValueError("dependency_wait_s must not be negative and max_dependency_delay_s must be positive")
        self.jobs = collection
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s
        self.dependency_wait_s = dependency_wait_s
        self.max_dependency_delay_s = max_dependency_delay_s

    def ensure_indexes(self) -> None:
        mongo.declare_indexes(self.jobs, [
            pymongo.IndexModel([("status", 1), ("kind", 1), ("available_at", 1)], name="claimable"),
            pymongo.IndexModel([("status", 1), ("lease_expires", 1)], name="leases"),
        ])

    # -- producers -------------------------------------------------------------------------

    def enqueue(self, job_id: str, kind: str, payload: Mapping, *, total: int = 0) -> Job:
        """Queues a job; enqueuing an id that exists changes nothing and returns it."""
        doc = self._run(lambda: self.jobs.find_one_and_update(
            {"_id": job_id},
            [{"$set": {
                "kind": {"$ifNull": ["$kind", kind]},
                "payload": {"$ifNull": ["$payload", {"$literal": dict(payload)}]},
                "status": {"$ifNull": ["$status", QUEUED]},
                "attempts": {"$ifNull": ["$attempts", 0]},
                "max_attempts": {"$ifNull": ["$max_attempts", self.max_attempts]},
                "progress": {"$ifNull": ["$progress", {"done": 0, "total": total}]},
                "checkpoint": {"$ifNull": ["$checkpoint", {"$literal": {}}]},
                "error": {"$ifNull": ["$error", ""]},
                "available_at": {"$ifNull": ["$available_at", "$$NOW"]},
                "created": {"$ifNull": ["$created", "$$NOW"]},
                "updated": {"$ifNull": ["$updated", "$$NOW"]},
            }}],
            upsert=True,
            return_document=pymongo.ReturnDocument.AFTER,
        ))
        return Job.from_doc(doc)

    def get(self, job_id: str) -> Job | None:
        doc = self._run(lambda: self.jobs.find_one({"_id": job_id}))
        return Job.from_doc(doc) if doc else None

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        ids = list(job_ids)
        if not ids:
            return {}
        return {doc["_id"]: Job.from_doc(doc) for doc in self._run(lambda: list(self.jobs.find({"_id": {"$in": ids}})))}

    def cancel(self, job_id: str) -> Job | None:
        """Asks a job to stop. A queued job no worker ever started is cancelled at once (it has
        no output). Any other unfinished job is flagged `cancel_requested`: its worker stops at its
        next check (`is_active` tells when), or, when it has none (queued again, or its worker
        died), the next worker to claim it runs the handler's cleanup and then cancels it.
        Returns the job as it is now; None when there is no such job."""
        never_started = {"$and": [{"$eq": ["$status", QUEUED]}, {"$ne": ["$started", True]},
                                  {"$eq": [{"$ifNull": ["$attempts", 0]}, 0]}]}
        queued = {"$eq": ["$status", QUEUED]}

        def operation():
            # One atomic update: the job cannot change state between deciding and flagging.
            return self.jobs.find_one_and_update(
                {"_id": job_id, "status": {"$in": [QUEUED, RUNNING]}},
                [{"$set": {
                    "status": {"$cond": [never_started, CANCELLED, "$status"]},
                    "cancel_requested": True,
                    # A queued job waiting out a retry delay is cleaned up now, not after it.
                    "available_at": {"$cond": [queued, {"$min": ["$available_at", "$$NOW"]}, "$available_at"]},
                    "updated": "$$NOW",
                }}],
                return_document=pymongo.ReturnDocument.AFTER) or self.jobs.find_one({"_id": job_id})
        doc = self._run(operation)
        return Job.from_doc(doc) if doc else None

    def is_active(self, job_id: str) -> bool:
        """True while a live worker holds the job (running, lease not expired)."""
        return self._run(lambda: self.jobs.count_documents({"_id": job_id, "status": RUNNING, "$expr": {"$gte": ["$lease_expires", "$$NOW"]}})) > 0

    def delete(self, job_id: str) -> None:
        self._run(lambda: self.jobs.delete_one({"_id": job_id}))

    def find_ids(self, id_pattern: str) -> list[str]:
        """The ids of the jobs whose id matches the regular expression `id_pattern` (anchored
        with ^, a fixed start of it uses the id index)."""
        return sorted(doc["_id"] for doc in self._run(lambda: list(self.jobs.find({"_id": {"$regex": id_pattern}}, {"_id": 1}))))

    def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.25) -> Job | None:
        """The job once finished, or as it is when `timeout_s` has passed (None if missing)."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job is None or job.finished or time.monotonic() >= deadline:
                return job
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    # -- workers ---------------------------------------------------------------------------

    def claim(self, owner: str, kinds: Iterable[str] | None = None) -> Job | None:
        """Takes the oldest claimable job: queued and due, or running under an expired lease.
        A claimed job with `cancel_requested` is to be cleaned up and cancelled, not run
        (`Worker.run_once` does that)."""
        claimable = {"$or": [
            {"status": QUEUED, "$expr": {"$lte": ["$available_at", "$$NOW"]}},
            {"status": RUNNING, **_lease_expired()},
        ]}
        if kinds is not None:
            claimable["kind"] = {"$in": list(kinds)}
        doc = self._run(lambda: self.jobs.find_one_and_update(
            claimable,
            [{"$set": {
                "status": RUNNING,
                "owner": owner,
                "lease_expires": {"$add": ["$$NOW", _ms(self.lease_s)]},
                "attempts": {"$add": [{"$ifNull": ["$attempts", 0]}, 1]},
                # Once started, a job may have output: cancelling it needs its cleanup.
                "started": True,
                "updated": "$$NOW",
            }}],
            sort=[("available_at", 1), ("_id", 1)],
            return_document=pymongo.ReturnDocument.AFTER,
        ))
        return Job.from_doc(doc) if doc else None

    def _owned(self, job: Job) -> dict:
        return {"_id": job.id, "owner": job.owner, "status": RUNNING}

    def _update_owned(self, job: Job, update) -> dict:
        doc = self._run(lambda: self.jobs.find_one_and_update(self._owned(job), update, return_document=pymongo.ReturnDocument.AFTER))
        if doc is None:
            raise LeaseLost(f"job {job.id} is no longer owned by {job.owner}")
        return doc

    def renew(self, job: Job) -> Job:
        """Extends the lease; LeaseLost when another worker has taken the job."""
        return Job.from_doc(self._update_owned(job, [{"$set": {"lease_expires": {"$add": ["$$NOW", _ms(self.lease_s)]}}}]))

    def report(self, job: Job, done: int, total: int, checkpoint: Mapping | None = None, details: Mapping | None = None) -> Job:
        """Records progress (and where to resume); renews the lease as well. `details` are shown
        with the progress (a training's latest metrics, say). Raises LeaseLost, or
        JobCancelled when a cancel was asked for."""
        progress = {**(details or {}), "done": int(done), "total": int(total)}
        # Progress means the dependencies are up again: the wait (and its bound) starts afresh.
        advanced = {"$gt": [int(done), {"$ifNull": ["$progress.done", 0]}]}
        changes = {"progress": {"$literal": progress},
                   "waiting": {"$cond": [advanced, "$$REMOVE", "$waiting"]},
                   "lease_expires": {"$add": ["$$NOW", _ms(self.lease_s)]}, "updated": "$$NOW"}
        if checkpoint is not None:
            changes["checkpoint"] = {"$literal": dict(checkpoint)}
        updated = Job.from_doc(self._update_owned(job, [{"$set": changes}]))
        if updated.cancel_requested:
            raise JobCancelled(f"job {job.id} was cancelled")
        return updated

    def complete(self, job: Job, result: Mapping | None = None) -> Job:
        changes = {"status": DONE, "owner": None, "error": "", "result": dict(result or {})}
        return Job.from_doc(self._update_owned(job, {"$set": changes, "$unset": {"waiting": ""}, "$currentDate": {"updated": True}}))

    def fail(self, job: Job, error: str) -> Job:
        """Ends the job as failed with `error`, a sentence for a person."""
        return Job.from_doc(self._update_owned(job, {"$set": {"status": FAILED, "owner": None, "error": error}, "$unset": {"waiting": ""},
                                                     "$currentDate": {"updated": True}}))

    def retry_later(self, job: Job, error: str) -> Job:
        """Back to the queue after a failure of the job itself (a crash), this attempt counted,
        due again after a growing delay."""
        delay_ms = _ms(min(MAX_RETRY_DELAY_S, self.retry_delay_s * 2 ** min(16, max(0, job.attempts - 1))))
        return Job.from_doc(self._update_owned(job, [{"$set": {
            "status": QUEUED, "owner": None, "error": {"$literal": error}, "lease_expires": None,
            "available_at": {"$add": ["$$NOW", delay_ms]}, "updated": "$$NOW"}}]))

    def dependency_delay_s(self, job: Job) -> float:
        """How long the job waits before its next try after one more failed look at a dependency."""
        waits = int(job.waiting.get("waits", 0))
        return min(self.max_dependency_delay_s, self.retry_delay_s * 2 ** min(16, waits))

    def wait_for_dependency(self, job: Job, reason: str) -> Job:
        """Back to the queue because something the job needs is not up (`reason`, a sentence):
        this claim is not counted as an attempt, the next try comes after a growing delay, and
        `waiting` records the reason, since when the job waits and when it tries next."""
        delay_ms = _ms(self.dependency_delay_s(job))
        retry_at = {"$add": ["$$NOW", delay_ms]}
        return Job.from_doc(self._update_owned(job, [{"$set": {
            "status": QUEUED, "owner": None, "lease_expires": None, "available_at": retry_at,
            "attempts": {"$max": [0, {"$subtract": ["$attempts", 1]}]},
            "waiting": {"reason": {"$literal": reason}, "since": {"$ifNull": ["$waiting.since", "$$NOW"]}, "retry_at": retry_at,
                        "waits": {"$add": [{"$ifNull": ["$waiting.waits", 0]}, 1]}},
            "updated": "$$NOW"}}]))

    def release(self, job: Job) -> Job:
        """Back to the queue at once, this attempt not counted (the worker is shutting down)."""
        return Job.from_doc(self._update_owned(job, [{"$set": {
            "status": QUEUED, "owner": None, "lease_expires": None, "available_at": "$$NOW",
            "attempts": {"$max": [0, {"$subtract": ["$attempts", 1]}]}, "updated": "$$NOW"}}]))

    def acknowledge_cancel(self, job: Job) -> Job:
        """The worker has stopped working on a cancelled job and cleaned up after it."""
        return Job.from_doc(self._update_owned(job, {"$set": {"status": CANCELLED, "owner": None}, "$currentDate": {"updated": True}}))


class JobContext:
    """What a running handler uses: report progress, and learn early that it must stop."""

    def __init__(self, queue: JobQueue, job: Job, stopping: threading.Event):
        self.queue = queue
        self.job = job
        self._stopping = stopping
        self._cancelled = threading.Event()
        self._lost = threading.Event()

    def check(self) -> None:
        """Raises if the job must stop now: cancelled, lease lost, or the worker shutting down."""
        if self._lost.is_set():
            raise LeaseLost(f"job {self.job.id}: lease lost")
        if self._cancelled.is_set():
            raise JobCancelled(f"job {self.job.id} was cancelled")
        if self._stopping.is_set():
            raise WorkerStopping(f"job {self.job.id}: worker stopping")

    @property
    def should_stop(self) -> bool:
        return self._lost.is_set() or self._cancelled.is_set() or self._stopping.is_set()

    def report(self, done: int, total: int, checkpoint: Mapping | None = None, details: Mapping | None = None) -> None:
        """Saves progress (with its `details`) and checkpoint, then raises like `check` when the
        job must stop (so the work reported is never done again by the next attempt)."""
        if self._lost.is_set():
            raise LeaseLost(f"job {self.job.id}: lease lost")
        try:
            self.job = self.queue.report(self.job, done, total, checkpoint, details)
        except JobCancelled:
            self._cancelled.set()
            raise
        except LeaseLost:
            self._lost.set()
            raise
        self.check()

    def heartbeat(self) -> None:
        """Renews the lease (called by the heartbeat thread)."""
        try:
            renewed = self.queue.renew(self.job)
        except LeaseLost:
            self._lost.set()
            return
        except errors.Unavailable as exc:
            log.warning("job %s: lease renewal failed, will retry: %s", self.job.id, exc.message)
            return
        if renewed.cancel_requested:
            self._cancelled.set()


class Heartbeat:
    """Renews a job's lease every third of the lease time while the job runs."""

    def __init__(self, context: JobContext, period_s: float):
        self.context = context
        self.period_s = period_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{context.job.id}", daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(self.period_s):
            self.context.heartbeat()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()


class JobHandler(Protocol):
    """The work of one kind of job."""

    def run(self, job: Job, context: JobContext) -> Mapping | None:
        """Does the work; returns the job's result. Raise JobFailed for a permanent failure,
        `errors.Unavailable` when something the job needs is not up (the job waits for it,
        without using up an attempt, and resumes from its checkpoint)."""

    def cleanup(self, job: Job) -> None:
        """Removes the partial output of a job that ends failed or cancelled. Idempotent."""


def _duration(seconds: float) -> str:
    """`45 s`, `12 min`, `1 h 5 min`: a wait as a person reads it."""
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


def _describe_crash(exc: BaseException) -> str:
    return f"processing stopped because of an internal error ({type(exc).__name__})"


@dataclass
class Worker:
    """Claims jobs of the handled kinds and runs them, up to `slots` at once, until `stopping`
    is set."""

    queue: JobQueue
    handlers: Mapping[str, JobHandler]
    owner: str
    poll_s: float = 1.0
    stopping: threading.Event = field(default_factory=threading.Event)
    slots: int = 1  # jobs run at once, each in a thread of its own (1: in the calling thread)
    _arrivals: Any = field(default=None, init=False, repr=False)  # change stream of new jobs
    _arrivals_unsupported: bool = field(default=False, init=False, repr=False)

    def run_until_signalled(self, on_stop: str) -> None:
        """`run_forever` in a worker process: SIGTERM or Ctrl-C sets `stopping` (logging
        `on_stop`, what happens to the job in progress) and the loop ends after the current job."""

        def stop(signum, _frame):
            log.info("stopping: %s", on_stop, extra={"signal": signal.Signals(signum).name})
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.run_forever()

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("a worker needs at least one job slot")

    def run_forever(self) -> None:
        log.info("worker started", extra={"owner": self.owner, "kinds": sorted(self.handlers), "slots": self.slots})
        if self.slots == 1:
            while not self.stopping.is_set():
                if not self._guarded(self.run_once):
                    self._wait_for_work()
        else:
            self._run_slots()
        if self._arrivals is not None:
            self._arrivals.close()
        log.info("worker stopped", extra={"owner": self.owner})

    @staticmethod
    def _guarded(work: Callable[[], Any]) -> Any:
        """What `work` answers; None when it failed, which is logged, never raised: one bad job
        must not stop the worker (its lease expires and it is claimed again)."""
        try:
            return work()
        except errors.Unavailable as exc:
            log.warning("worker: a dependency is unavailable: %s", exc.message)
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("worker: a job could not be handled")
        return None

    def slot_owner(self, slot: int) -> str:
        """The owner name a slot's leases carry: distinct per slot, so that a job whose lease ran
        out in one slot and was claimed again by another is no longer the first slot's to write."""
        return self.owner if slot == 0 else f"{self.owner}#{slot}"

    def _run_slots(self) -> None:
        """Claims a job whenever a slot is free and runs it in a thread of its own; on stop, waits
        for the running jobs, which see `stopping` and go back to the queue."""
        free: queue_mod.SimpleQueue[int] = queue_mod.SimpleQueue()
        for slot in range(self.slots):
            free.put(slot)
        running: list[threading.Thread] = []
        while not self.stopping.is_set():
            try:
                slot = free.get(timeout=self.poll_s)  # every slot busy: wait for one to free
            except queue_mod.Empty:
                continue
            if self.stopping.is_set():  # a slot freed by a job handed back as the worker stops
                break
            job = self._guarded(lambda: self.queue.claim(self.slot_owner(slot), self.handlers.keys()))
            if job is None:
                free.put(slot)
                self._wait_for_work()
                continue
            thread = threading.Thread(target=self._run_in_slot, args=(job, slot, free), name=f"job-slot-{slot}", daemon=True)
            running = [item for item in running if item.is_alive()] + [thread]
            thread.start()
        for thread in running:
            thread.join()

    def _run_in_slot(self, job: Job, slot: int, free: queue_mod.SimpleQueue) -> None:
        try:
            self._guarded(lambda: self.handle(job))
        finally:
            free.put(slot)  # whatever became of the job, the slot takes the next one

    def _wait_for_work(self) -> None:
        """Idles until a job is queued (a change stream on the jobs collection wakes the worker at
        once), or `poll_s` at most: the poll still finds retries whose delay ran out and jobs
        whose lease expired. A database without change streams (not a replica set) is polled."""
        if self._arrivals is None and not self._arrivals_unsupported:
            try:
                self._arrivals = self.queue.jobs.watch(
                    [{"$match": {"operationType": "insert"}}], max_await_time_ms=max(1, int(min(self.poll_s, 1.0) * 1000)))
            except PyMongoError as exc:
                self._arrivals_unsupported = True
                log.info("worker: no change stream on the jobs (%s); polling every %s s", exc, self.poll_s)
        if self._arrivals is None:
            self.stopping.wait(self.poll_s)
            return
        deadline = time.monotonic() + self.poll_s
        try:
            # A new job ends the wait; each look lasts a second at most, so a stop is seen soon.
            while not self.stopping.is_set() and time.monotonic() < deadline:
                if self._arrivals.try_next() is not None:
                    return
        except PyMongoError as exc:
            log.warning("worker: the change stream of new jobs failed, reopening it: %s", exc)
            self._arrivals.close()
            self._arrivals = None
            self.stopping.wait(self.poll_s)

    def run_once(self) -> bool:
        """Claims and runs one job in the calling thread; False when there was none."""
        job = self.queue.claim(self.owner, self.handlers.keys())
        if job is None:
            return False
        self.handle(job)
        return True

    def handle(self, job: Job) -> None:
        """Runs a claimed job (or cleans up after it, or gives it up) under a heartbeat."""
        handler = self.handlers[job.kind]
        if job.exhausted and not job.cancel_requested:
            self._give_up(job, handler)
            return
        log.info("job claimed", extra={"job": job.id, "attempt": job.attempts, "cancel_requested": job.cancel_requested})
        context = JobContext(self.queue, job, self.stopping)
        try:
            with Heartbeat(context, self.queue.lease_s / 3):
                if job.cancel_requested:  # cancelled while no worker held it: only the cleanup is left
                    self._cancel(handler, job)
                else:
                    self._run(handler, context)
        except LeaseLost:
            log.warning("job %s: lease lost; another worker carries on", job.id)

    def _run(self, handler: JobHandler, context: JobContext) -> None:
        started, outcome = time.monotonic(), "lease_lost"  # unless it settles: LeaseLost goes on up
        try:
            outcome = self._run_and_settle(handler, context)
        finally:
            metrics.observe_job(context.job.kind, outcome, time.monotonic() - started)

    def _run_and_settle(self, handler: JobHandler, context: JobContext) -> str:
        """Runs the job and records how it ended; answers that outcome (for the metrics)."""
        job = context.job
        try:
            result = handler.run(job, context)
        except JobCancelled:
            self._cancel(handler, context.job)
            return "cancelled"
        except WorkerStopping:
            self.queue.release(context.job)
            log.info("job released for another worker", extra={"job": job.id})
            return "released"
        except LeaseLost:
            raise
        except JobFailed as exc:
            self._fail(handler, context.job, exc.message)
            return "failed"
        except errors.Unavailable as exc:
            self._wait_or_fail(handler, context.job, exc.message)
            return "waiting"
        except errors.DomainError as exc:
            self._fail(handler, context.job, exc.message)
            return "failed"
        except Exception as exc:  # noqa: BLE001 - a bug or a surprise: logged, retried, then given up
            log.exception("job %s crashed", job.id)
            self._retry_or_fail(handler, context.job, _describe_crash(exc))
            return "crashed"
        self.queue.complete(context.job, result)
        log.info("job done", extra={"job": job.id})
        return "done"

    def _cancel(self, handler: JobHandler, job: Job) -> None:
        """Cleans up after a cancelled job, then cancels it; a cleanup that fails is retried later
        (the job stays flagged, so the next claim cleans up again)."""
        try:
            handler.cleanup(job)
        except errors.Unavailable as exc:
            log.warning("job %s: cleaning up after cancel did not finish; will try again: %s", job.id, exc.message)
            self.queue.retry_later(job, job.error)
            return
        except Exception:  # noqa: BLE001 - partial output must not stay behind: clean up again later
            log.exception("job %s: cleaning up after cancel did not finish; will try again", job.id)
            self.queue.retry_later(job, job.error)
            return
        self.queue.acknowledge_cancel(job)
        log.info("job cancelled", extra={"job": job.id})

    def _fail(self, handler: JobHandler, job: Job, error: str) -> None:
        try:
            handler.cleanup(job)
        except Exception:  # noqa: BLE001 - partial output must not stay behind: fail again later
            log.exception("job %s: cleaning up after failure did not finish; will try again", job.id)
            self.queue.retry_later(job, error)
            return
        self.queue.fail(job, error)
        log.warning("job %s failed: %s", job.id, error)

    def _wait_or_fail(self, handler: JobHandler, job: Job, reason: str) -> None:
        """A dependency is not up: the job waits for it (no attempt used), up to the queue's
        `dependency_wait_s` without progress, then fails with the reason."""
        if job.waited_s >= self.queue.dependency_wait_s:
            self._fail(handler, job, f"{reason} (gave up after waiting {_duration(job.waited_s)} for it)")
            return
        delay_s = self.queue.dependency_delay_s(job)
        self.queue.wait_for_dependency(job, reason)
        log.warning("job %s waits for a dependency, next try in %.1f s: %s", job.id, delay_s, reason)

    def _retry_or_fail(self, handler: JobHandler, job: Job, error: str) -> None:
        if job.attempts >= job.max_attempts:
            self._fail(handler, job, f"{error} (gave up after {job.attempts} attempts)")
            return
        self.queue.retry_later(job, error)
        log.warning("job %s will be retried: %s", job.id, error)

    def _give_up(self, job: Job, handler: JobHandler) -> None:
        reason = job.error or "the worker processing it stopped before finishing"
        self._fail(handler, job, f"processing was attempted {job.max_attempts} times and never finished: {reason}")
