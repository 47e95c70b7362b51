"""Project rules: ownership, validation, and the delete cascade; no HTTP or gRPC here.

Deleting a project first hides it (marks it `deleting`), then asks every service that holds
project data to delete it. If one of them fails, the mark stays and `retry_pending_deletions`
(run periodically) finishes the job later: a delete is never forgotten half-way. An upload that
checked the project just before it was hidden may still write afterwards, so the data is swept
once more `final_sweep_after_s` later, and only then is the project's record removed.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from mlstudio.common import detections, errors, mongo

log = logging.getLogger(__name__)

PROJECT_TYPES = ("Classification", "Detection")
MAX_TITLE = 200
MAX_DESCRIPTION = 5000
# The score a detection needs when a request names none: a project's own, else this. 0.4 is where
# the built-in COCO detector keeps the cars and bottles of the shared videos (docs/models.md).
DEFAULT_THRESHOLD = 0.4


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
        "threshold": doc.get("threshold") or DEFAULT_THRESHOLD,
    }


def project_threshold(value) -> float:
    """A project's `threshold` as given (number or text): in (0, 1], the rule of a request's own."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise errors.InvalidArgument("threshold must be a number in (0, 1]", code="invalid_threshold")
    return detections.threshold(value)


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


class ProjectCore:
    def __init__(self, repository, data_owners: Sequence[ProjectDataOwner] = (), *, final_sweep_after_s: float = 600.0):
        self.repository = repository
        self.data_owners = list(data_owners)
        self.final_sweep_after_s = final_sweep_after_s

    def create(self, user_id: int, fields: dict) -> dict:
        title = _text("title", fields.get("title"), MAX_TITLE, required=True)
        description = _text("description", fields.get("description"), MAX_DESCRIPTION, required=False)
        kind = project_type(fields.get("type"))
        settings = {"threshold": project_threshold(fields["threshold"])} if fields.get("threshold") is not None else {}
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
        if fields.get("threshold") is not None:
            changes["threshold"] = project_threshold(fields["threshold"])
        if fields.get("type") is not None and project_type(fields["type"]) != doc["type"]:
            raise errors.InvalidArgument("a project's type cannot change: its models and images depend on it")
        if not changes:
            raise errors.InvalidArgument("nothing to update: give title, description or threshold")
        updated = self.repository.update(project_id, changes)
        if updated is None:
            raise errors.NotFound(f"project {project_id} not found")
        return public_project(updated)

    def delete(self, project_id: int, user_id: int) -> None:
        self._owned(project_id, user_id)
        self.repository.mark_deleting(project_id)
        try:
            self._sweep(project_id, final=False)
        except errors.DomainError as exc:
            log.warning("project %s: data deletion unfinished, will retry: %s", project_id, exc.message)

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
            try:
                self._sweep(project_id, final=swept)
                done += 1
            except errors.DomainError as exc:
                log.warning("project %s: data deletion still unfinished: %s", project_id, exc.message)
        return done
