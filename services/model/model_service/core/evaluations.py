"""The core's side of evaluations (`model_service.evaluation`): after a training, of its
held-out images; on request, of any model a user may read on their project's labelled images.
The core checks who may; the rest is the evaluation service's.
"""
from __future__ import annotations

from mlstudio.common import errors
from mlstudio.common.media_files import MediaFile

from ..evaluation.service import chart_path
from .shared import TRAINED

class Evaluations:
    """Who may evaluate what, and the evaluation chart (a part of `ModelCore`)."""

    def _evaluations(self):
        if self.evaluations is None:
            raise errors.NotImplementedYet("evaluating models is not deployed here: it needs the image service",
                                           code="evaluation_not_available")
        return self.evaluations

    def evaluate(self, model_id: int, user_id: int, project_id: int | None) -> dict:
        """Queues the evaluation of a model the user may read on their project's labelled images."""
        evaluations = self._evaluations()
        if project_id is None:
            raise errors.InvalidArgument("query parameter project_id is required: the project whose images judge the model")
        doc = self._readable(model_id, user_id)
        project = self.projects.get_project(project_id, user_id)
        return evaluations.start(doc, user_id, project_id, project.type)

    def evaluation(self, model_id: int, user_id: int, project_id: int | None = None) -> dict:
        """The evaluation on the user's project, or (no project) of the model's training, whose
        held-out images are its owner's only."""
        evaluations = self._evaluations()
        doc = self._readable(model_id, user_id)
        if project_id is None:
            if doc["user"] != user_id:
                raise errors.NotFound(f"model {model_id} has no training of yours")
        else:
            self.projects.get_project(project_id, user_id)
        return evaluations.get(doc, project_id)

    def evaluate_held_out(self, model_id: int, history: list[dict]) -> None:
        """After a training: queues the evaluation of the model on its held-out images."""
        doc = self.repository.get(model_id)
        if self.evaluations is not None and doc is not None and doc["status"] == TRAINED:
            self.evaluations.after_training(doc, history)

    def evaluation_chart(self, model_id: int, project_id: int | None, expires: str | None, signature: str | None) -> MediaFile:
        """An evaluation's chart behind a valid signed URL."""
        self.signer.verify(chart_path(model_id, project_id), expires, signature)
        return self._evaluations().chart(model_id, project_id)
