"""The one repository base every service's MongoDB access uses: a database error becomes
`Unavailable` (503 / UNAVAILABLE), nothing else is touched, and records being deleted are
hidden by one filter."""
from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect, DuplicateKeyError

from image_service import repository as image_repository
from image_service.repository import DatasetJobRecords, ImageRepository
from mlstudio.common import errors, jobs, mongo
from model_service import repository as model_repository
from project_service import repository as project_repository
from user_service.repository import UserRepository
from video_service import repository as video_repository


def test_a_database_error_becomes_unavailable_and_other_results_pass_unchanged():
    def down():
        raise AutoReconnect("connection refused by db.internal:27017")

    with pytest.raises(errors.Unavailable) as raised:
        mongo.Repository._run(down)
    assert raised.value.message == "the database is unavailable, try again shortly"  # no host, no driver text
    assert isinstance(raised.value.__cause__, AutoReconnect)

    def taken():
        raise errors.AlreadyExists("username 'ann' is taken")

    with pytest.raises(errors.AlreadyExists):
        mongo.Repository._run(taken)
    assert mongo.run(lambda: 42) == 42


def test_a_duplicate_key_the_caller_does_not_handle_is_unavailable_too():
    def duplicate():
        raise DuplicateKeyError("E11000")

    with pytest.raises(errors.Unavailable):
        mongo.run(duplicate)


@pytest.mark.parametrize("repository", [model_repository.ModelRepository, project_repository.ProjectRepository,
                                        video_repository.VideoRepository, ImageRepository, DatasetJobRecords,
                                        UserRepository, jobs.JobQueue])
def test_every_repository_maps_database_errors_through_the_shared_base(repository):
    assert issubclass(repository, mongo.Repository)
    assert repository._run is mongo.Repository._run  # none keeps a copy of its own


@pytest.mark.parametrize("module", [model_repository, project_repository, video_repository, image_repository])
def test_every_repository_hides_records_being_deleted_with_the_one_filter(module):
    assert module.VISIBLE is mongo.VISIBLE
    assert mongo.VISIBLE == {"deleting": {"$ne": True}}
