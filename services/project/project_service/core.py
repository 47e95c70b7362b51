"""Project rules: ownership, validation, and the delete cascade; no HTTP or gRPC here.

Deleting a project first hides it (marks it `deleting`) and queues its cascade, and answers:
a job (`DELETE_KIND`, in the service's job queue) then asks every service that holds project
data to delete it, in the background, since that takes as long as the project is large (seconds
for 50,000 images, past the gateway's timeout for ten times that). The job is a document in
MongoDB: a process that dies while it runs leaves it to another worker once its lease expires,
and a service that is down makes it wait and try again. Should the job end without a sweep (it
failed), the mark stays and `retry_pending_deletions` (run periodically) sweeps: a delete is
never forgotten half-way. An upload that checked the project just before it was hidden may still
write afterwards, so the data is swept once more `final_sweep_after_s` later, and only then is
the project's record removed.

Without a queue (`cascades=None`: tools and tests that run no worker), the cascade runs within
the delete, as it did before it had one.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mlstudio.common import detections, errors, jobs, mongo, review
from mlstudio.common.vocabulary import PROJECT_TYPES

log = logging.getLogger(__name__)

DELETE_KIND = "project-delete"
MAX_TITLE = 200
MAX_DESCRIPTION = 5000


class ProjectDataOwner(Protocol):
    """A service that keeps data of projects (videos, images, models)."""

    peer: str

    def delete_project_data(self, project_id: int) -> int: ...


def public_project(doc: dict) -> dict:
    return {
        "id": doc["_id"],
        "title": doc["title"],
        "location": doc["location"],
        "description": doc.get("description", ""),
        "type": doc["type"],
        "user": doc["user"],
        "create_time": mongo.iso(doc["create_time"]),
        **{name: setting.of(doc) for name, setting in SETTINGS.items()},
    }


def project_threshold(value) -> float:
    """A project's `threshold` as given (number or text): in (0, 1], the rule of a request's own."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise errors.InvalidArgument("threshold must be a number in (0, 1]", code="invalid_threshold")
    return detections.threshold(value)


@dataclass(frozen=True)
class Setting:
    """A project setting: how a value given at creation or update is read (InvalidArgument when
    wrong), and the value of a project that never set it (a value is stored only once set)."""

    name: str
    parse: Callable[[object], float]
    default: float

    def of(self, doc: dict) -> float:
        value = doc.get(self.name)
        return self.default if value is None else value


SETTINGS = {setting.name: setting for setting in (
    # The score a detection needs when a prediction or video upload names none. 0.4 is where the
    # built-in COCO detector keeps the cars and bottles of the shared videos (docs/models.md).
    Setting("threshold", project_threshold, 0.4),
    # A model's label scoring at least this is checked (isTrain); below it, it waits for review.
    Setting("review_threshold", review.threshold, review.DEFAULT_REVIEW_THRESHOLD),
)}


def project_type(value) -> str:
    if not isinstance(value, str):
        raise errors.InvalidArgument("field type is required: Classification or Detection")
    for known in PROJECT_TYPES:
        if value.strip().lower() == known.lower():
            return known
    raise errors.InvalidArgument(f"type {value!r} is unknown: use Classification or Detection")


def _text(name: str, value, limit: int, *, required: bool) -> str:
    if value is None or (isinstance(value, str) and not value.strip() and required):
        if required:
            raise errors.InvalidArgument(f"field {name} is required")
        return ""
    if not isinstance(value, str):
        raise errors.InvalidArgument(f"field {name} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise errors.InvalidArgument(f"field {name} is longer than {limit} characters")
    return value


def delete_job_id(project_id: int) -> str:
    return f"project-delete-{project_id}"


class ProjectCore:
    def __init__(self, repository, data_owners: Sequence[ProjectDataOwner] = (), *, final_sweep_after_s: float = 600.0,
                 cascades: jobs.JobQueue | None = None):
        self.repository = repository
        self.data_owners = list(data_owners)
        self.final_sweep_after_s = final_sweep_after_s
        self.cascades = cascades

    def create(self, user_id: int, fields: dict) -> dict:
        title = _text("title", fields.get("title"), MAX_TITLE, required=True)
        description = _text("description", fields.get("description"), MAX_DESCRIPTION, required=False)
        kind = project_type(fields.get("type"))
        settings = {name: setting.parse(fields[name]) for name, setting in SETTINGS.items() if fields.get(name) is not None}
        return public_project(self.repository.create(user_id, title, description, kind, **settings))

    def list(self, user_id: int) -> list[dict]:
        return [public_project(doc) for doc in self.repository.list_for(user_id)]

    def _owned(self, project_id: int, user_id: int) -> dict:
        doc = self.repository.get(project_id)
        if doc is None or doc["user"] != user_id:
            raise errors.NotFound(f"project {project_id} not found")
        return doc

    def owner(self, project_id: int) -> int:
        """Who owns the project (legacy mode's id-only requests act for them); NotFound if none."""
        doc = self.repository.get(project_id)
        if doc is None:
            raise errors.NotFound(f"project {project_id} not found")
        return doc["user"]

    def get(self, project_id: int, user_id: int) -> dict:
        return public_project(self._owned(project_id, user_id))

    def update(self, project_id: int, user_id: int, fields: dict) -> dict:
        doc = self._owned(project_id, user_id)
        changes = {}
        if fields.get("title") is not None:
            changes["title"] = _text("title", fields["title"], MAX_TITLE, required=True)
        if fields.get("description") is not None:
            changes["description"] = _text("description", fields["description"], MAX_DESCRIPTION, required=False)
        for name, setting in SETTINGS.items():
            if fields.get(name) is not None:  # an empty value is refused, not ignored
                changes[name] = setting.parse(fields[name])
        if fields.get("type") is not None and project_type(fields["type"]) != doc["type"]:
            raise errors.InvalidArgument("a project's type cannot change: its models and images depend on it")
        if not changes:
            raise errors.InvalidArgument(f"nothing to update: give title, description or {' or '.join(SETTINGS)}")
        updated = self.repository.update(project_id, changes)
        if updated is None:
            raise errors.NotFound(f"project {project_id} not found")
        return public_project(updated)

    def delete(self, project_id: int, user_id: int) -> None:
        """Hides the project and queues the deletion of its data (see the module docstring)."""
        self._owned(project_id, user_id)
        self.repository.mark_deleting(project_id)
        if self.cascades is not None:
            try:
                self.cascades.enqueue(delete_job_id(project_id), DELETE_KIND, {"project_id": project_id})
            except errors.DomainError as exc:
                # Hidden already: the periodic retry sweeps a project that has no job.
                log.warning("project %s: data deletion not queued, the retry will sweep: %s", project_id, exc.message)
            return
        try:
            self._sweep(project_id, final=False)
        except errors.DomainError as exc:
            log.warning("project %s: data deletion unfinished, will retry: %s", project_id, exc.message)

    def cascade(self, project_id: int) -> None:
        """The first sweep of a deleted project's data (the delete job's work; idempotent)."""
        self._sweep(project_id, final=False)

    def _queued(self, project_id: int) -> bool:
        """Whether the project's delete job is still to run (queued, waiting or running)."""
        if self.cascades is None:
            return False
        job = self.cascades.get(delete_job_id(project_id))
        return job is not None and not job.finished

    def _sweep(self, project_id: int, *, final: bool) -> None:
        for owner in self.data_owners:
            deleted = owner.delete_project_data(project_id)
            log.info("project %s: %s deleted %s items", project_id, owner.peer, deleted)
        if final:
            self.repository.remove(project_id)
        else:
            self.repository.mark_swept(project_id)

    def retry_pending_deletions(self) -> int:
        """Finishes deletions that failed half-way, and makes the final sweep of those swept
        long enough ago; returns how many sweeps completed."""
        done = 0
        for project_id, swept in self.repository.pending_deletions(self.final_sweep_after_s):
            if not swept and self._queued(project_id):
                continue  # its job sweeps (or waits for a service to come back)
            try:
                self._sweep(project_id, final=swept)
                done += 1
            except errors.DomainError as exc:
                log.warning("project %s: data deletion still unfinished: %s", project_id, exc.message)
        return done


class DeleteJob:
    """The `DELETE_KIND` job: the first sweep of a deleted project's data. A data owner that is
    down raises `errors.Unavailable`, which makes the job wait and try again (jobs module)."""

    def __init__(self, core: ProjectCore):
        self.core = core

    def run(self, job: jobs.Job, context: jobs.JobContext) -> dict:
        self.core.cascade(int(job.payload["project_id"]))
        return {}

    def cleanup(self, job: jobs.Job) -> None:
        """Nothing to undo: deleting again is what a retry does."""
