"""Project rules and the delete cascade, with an in-memory repository and fake data owners."""
from datetime import datetime, timezone

import pytest

from mlstudio.common import errors
from project_service.core import ProjectCore


class FakeRepository:
    def __init__(self):
        self.projects = {}
        self.now = 0.0  # seconds; tests move it

    def create(self, user_id, title, description, type_, **settings):
        pid = len(self.projects) + 1
        doc = {"_id": pid, "title": title, "description": description, "type": type_, "user": user_id,
               "location": f"projects/{pid}/", "create_time": datetime(2026, 1, 1, tzinfo=timezone.utc), **settings}
        self.projects[pid] = doc
        return doc

    def list_for(self, user_id):
        return [d for d in self.projects.values() if d["user"] == user_id and not d.get("deleting")]

    def get(self, project_id):
        doc = self.projects.get(project_id)
        return None if doc is None or doc.get("deleting") else doc

    def update(self, project_id, changes):
        doc = self.get(project_id)
        if doc:
            doc.update(changes)
        return doc

    def mark_deleting(self, project_id):
        self.projects[project_id]["deleting"] = True

    def mark_swept(self, project_id):
        self.projects[project_id]["swept_at"] = self.now

    def pending_deletions(self, final_sweep_after_s):
        return [(pid, "swept_at" in d) for pid, d in self.projects.items()
                if d.get("deleting") and ("swept_at" not in d or d["swept_at"] <= self.now - final_sweep_after_s)]

    def remove(self, project_id):
        self.projects.pop(project_id, None)


class Owner:
    def __init__(self, peer, fail_times=0):
        self.peer, self.fail_times, self.calls = peer, fail_times, []

    def delete_project_data(self, project_id):
        self.calls.append(project_id)
        if self.fail_times:
            self.fail_times -= 1
            raise errors.Unavailable(f"the {self.peer} service is unavailable")
        return 3


def test_create_normalises_type_and_lists_only_own_projects():
    core = ProjectCore(FakeRepository())
    created = core.create(1, {"title": " First ", "type": "detection", "description": "d"})
    core.create(2, {"title": "Other", "type": "Classification"})
    assert created["title"] == "First" and created["type"] == "Detection" and created["user"] == 1
    assert created["create_time"] == "2026-01-01T00:00:00.000Z"
    assert [p["id"] for p in core.list(1)] == [created["id"]]


def test_the_review_threshold_defaults_to_0_8_is_set_at_creation_and_changed_by_update():
    core = ProjectCore(FakeRepository())
    plain = core.create(1, {"title": "t", "type": "Detection"})
    strict = core.create(1, {"title": "t", "type": "Detection", "review_threshold": "0.95"})
    assert (plain["review_threshold"], strict["review_threshold"]) == (0.8, 0.95)
    assert core.update(plain["id"], 1, {"review_threshold": 0.5})["review_threshold"] == 0.5
    # A project stored before the setting existed reads as the default.
    del core.repository.projects[strict["id"]]["review_threshold"]
    assert core.get(strict["id"], 1)["review_threshold"] == 0.8


@pytest.mark.parametrize("value", [-0.1, 1.5, "high", True, "nan", [0.5], ""])
def test_a_review_threshold_outside_0_to_1_is_refused_and_changes_nothing(value):
    core = ProjectCore(FakeRepository())
    with pytest.raises(errors.InvalidArgument, match="review_threshold must be a number from 0 to 1"):
        core.create(1, {"title": "t", "type": "Detection", "review_threshold": value})
    pid = core.create(1, {"title": "t", "type": "Detection"})["id"]
    with pytest.raises(errors.InvalidArgument, match="review_threshold"):
        core.update(pid, 1, {"description": "new", "review_threshold": value})
    assert core.get(pid, 1)["description"] == "" and core.get(pid, 1)["review_threshold"] == 0.8


def test_a_project_has_a_detection_threshold_of_0_4_unless_it_sets_its_own():
    core = ProjectCore(FakeRepository())
    default = core.create(1, {"title": "d", "type": "Detection"})
    chosen = core.create(1, {"title": "c", "type": "Detection", "threshold": "0.25"})
    assert default["threshold"] == 0.4 and chosen["threshold"] == 0.25
    assert core.update(default["id"], 1, {"threshold": 0.6})["threshold"] == 0.6
    assert core.get(default["id"], 1)["threshold"] == 0.6 and core.get(chosen["id"], 1)["threshold"] == 0.25


@pytest.mark.parametrize("threshold", [0, "0", -0.1, 1.5, "high", "nan", True, ""])
def test_a_threshold_outside_0_to_1_is_refused_and_changes_nothing(threshold):
    core = ProjectCore(FakeRepository())
    pid = core.create(1, {"title": "d", "type": "Detection"})["id"]
    with pytest.raises(errors.InvalidArgument, match=r"threshold must be a number in \(0, 1\]") as refused:
        core.update(pid, 1, {"threshold": threshold, "title": "renamed"})
    assert refused.value.code == "invalid_threshold"
    with pytest.raises(errors.InvalidArgument, match="threshold"):
        core.create(1, {"title": "e", "type": "Detection", "threshold": threshold})
    assert core.get(pid, 1)["threshold"] == 0.4 and core.get(pid, 1)["title"] == "d"
    assert [p["title"] for p in core.list(1)] == ["d"]


@pytest.mark.parametrize("fields", [{}, {"title": "", "type": "Detection"}, {"title": "t"}, {"title": "t", "type": "Segmentation"},
                                    {"title": "x" * 201, "type": "Detection"}, {"title": 5, "type": "Detection"}])
def test_bad_projects_are_refused(fields):
    with pytest.raises(errors.InvalidArgument):
        ProjectCore(FakeRepository()).create(1, fields)


def test_another_users_project_is_not_found():
    core = ProjectCore(FakeRepository())
    pid = core.create(1, {"title": "t", "type": "Detection"})["id"]
    for action in (lambda: core.get(pid, 2), lambda: core.update(pid, 2, {"description": "x"}), lambda: core.delete(pid, 2)):
        with pytest.raises(errors.NotFound):
            action()


def test_update_changes_description_but_never_type():
    core = ProjectCore(FakeRepository())
    pid = core.create(1, {"title": "t", "type": "Detection"})["id"]
    assert core.update(pid, 1, {"description": "My second project"})["description"] == "My second project"
    with pytest.raises(errors.InvalidArgument):
        core.update(pid, 1, {"type": "Classification"})
    with pytest.raises(errors.InvalidArgument):
        core.update(pid, 1, {})


def test_delete_cascades_to_every_data_owner_then_sweeps_once_more_later():
    owners = [Owner("video"), Owner("model"), Owner("image")]
    core = ProjectCore(FakeRepository(), owners, final_sweep_after_s=600)
    pid = core.create(1, {"title": "t", "type": "Detection"})["id"]
    core.delete(pid, 1)
    assert [o.calls for o in owners] == [[pid], [pid], [pid]]
    with pytest.raises(errors.NotFound):
        core.get(pid, 1)
    core.repository.now = 599  # an upload in flight may still write: the record waits
    assert core.retry_pending_deletions() == 0 and pid in core.repository.projects
    core.repository.now = 600
    assert core.retry_pending_deletions() == 1
    assert [o.calls for o in owners] == [[pid, pid]] * 3  # the final sweep deletes what came late
    assert core.repository.projects == {}


def test_a_failed_cascade_hides_the_project_and_is_retried():
    flaky = Owner("image", fail_times=1)
    core = ProjectCore(FakeRepository(), [Owner("video"), flaky])
    pid = core.create(1, {"title": "t", "type": "Detection"})["id"]
    core.delete(pid, 1)
    with pytest.raises(errors.NotFound):
        core.get(pid, 1)
    assert core.repository.pending_deletions(600) == [(pid, False)]
    assert core.retry_pending_deletions() == 1  # the unfinished first sweep
    assert flaky.calls == [pid, pid] and core.repository.pending_deletions(600) == []
    core.repository.now = 600
    assert core.retry_pending_deletions() == 1  # the final one
    assert core.repository.projects == {} and flaky.calls == [pid, pid, pid]
