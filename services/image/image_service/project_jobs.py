"""What the image service's background work on a project (exports, imports, re-labellings) has in
common: a record per request in a collection of its own, a job in the shared queue, and the same
rule for who sees which record (its project's owner, through the project's routes)."""
from __future__ import annotations

from mlstudio.common import errors, jobs


class ProjectJobCore:
    """Reading a kind's records; a subclass sets `noun` (how messages name a record) and
    `present` (what a person sees of a record and its job), and has `images` (the ImageCore),
    `repository` (the records) and `queue` (their jobs)."""

    noun = "job"

    def get(self, user_id: int, project_id: int, record_id: int) -> dict:
        doc = self._owned(user_id, project_id, record_id)
        return self.present(doc, self.queue.get(doc["job"]))

    def list(self, user_id: int, project_id: int) -> list[dict]:
        self.images.project(project_id, user_id)
        docs = [doc for doc in self.repository.list(project_id) if doc["user"] == user_id]
        found = self.queue.get_many(doc["job"] for doc in docs)
        return [self.present(doc, found.get(doc["job"])) for doc in docs]

    def _owned(self, user_id: int, project_id: int, record_id: int) -> dict:
        self.images.project(project_id, user_id)
        doc = self.repository.get(record_id)
        if doc is None or doc["project"] != project_id or doc["user"] != user_id:
            raise errors.NotFound(f"{self.noun} {record_id} not found in project {project_id}")
        return doc

    def present(self, doc: dict, job: jobs.Job | None) -> dict:
        raise NotImplementedError
