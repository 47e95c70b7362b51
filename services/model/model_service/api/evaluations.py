"""`/models/<id>/evaluation` and `/models/<id>/evaluate`: a model's evaluation (of its training, on
its held-out images, or on a project's labelled images), as JSON and as a chart."""
from flask import request
from flask_restx import Namespace, Resource, fields

from mlstudio.common import ids, media_files
from mlstudio.common.vocabulary import MODEL_TYPES

from ..evaluation.service import EVALUATION_STATUSES

CLASS_FIELDS = {
    "label": fields.String(example="bottle"),
    "precision": fields.Float(example=0.96, description="of the predictions of this class, the share that were right (Detection: at IoU 0.5, "
                                          "boxes scoring at least `threshold`; null when none)"),
    "recall": fields.Float(example=0.98, description="of the images (Detection: true boxes) of this class, the share found"),
    "f1": fields.Float(example=0.97, description="Classification: harmonic mean of precision and recall"),
    "ap50": fields.Float(example=0.91, description="Detection: average precision at IoU 0.5 (COCO, pycocotools)"),
    "ap": fields.Float(example=0.64, description="Detection: average precision over IoU 0.5:0.95 (COCO)"),
    "support": fields.Integer(example=60, description="true images (Detection: true boxes) of this class"),
}
EVALUATION_FIELDS = {
    "model": fields.Integer(example=5),
    "project": fields.Integer(example=1, description="the project whose images were used"),
    "scope": fields.String(enum=["held_out", "project"], description="held_out: the images its training held out; project: all the "
                                                                     "project's tagged (Classification) or boxed (Detection) images"),
    "status": fields.String(enum=list(EVALUATION_STATUSES)),
    "error": fields.String(example="the project has no checked images to evaluate on", description="Failed: why"),
    "progress": fields.Raw(example={"done": 24, "total": 24}, description="{done, total}: images predicted"),
    "evaluated_at": fields.String(example="2026-12-01T19:46:17.618Z", description="ISO 8601 UTC, once Done"),
    "type": fields.String(enum=list(MODEL_TYPES)),
    "images": fields.Integer(example=24, description="images evaluated on"),
    "accuracy": fields.Float(example=0.958, description="Classification: share of images whose predicted label is their tag"),
    "classes": fields.Raw(description="per class (every true class, then the predicted ones that are no true class): "
                                      "label, precision, recall, f1 (Classification), ap50, ap (Detection), support"),
    "macro_avg": fields.Raw(example={"precision": 0.96, "recall": 0.96, "f1": 0.96}, description="Classification: precision, recall, f1 averaged over the true classes"),
    "weighted_avg": fields.Raw(example={"precision": 0.96, "recall": 0.96, "f1": 0.96}, description="Classification: the same, weighted by support"),
    "confusion_matrix": fields.Raw(example={"labels": ["bottle", "no bottle"], "matrix": [[12, 0], [1, 11]]}, description="Classification: {labels, matrix}; matrix[i][j]: images of labels[i] predicted labels[j]"),
    "threshold": fields.Float(example=0.5, description="Detection: the score a box needs to count in precision and recall (the model's)"),
    "map50": fields.Float(example=0.91, description="Detection: mean over the true classes of ap50"),
    "map": fields.Float(example=0.64, description="Detection: mean over the true classes of ap"),
    "curves": fields.Raw(example={"epochs": 2, "metrics": {"accuracy": [0.81, 0.95], "val_accuracy": [0.79, 0.93]}}, description="held_out: {epochs, metrics: {name: [value per epoch]}}, what the training reported each epoch"),
    "chart_url": fields.String(example="/files/evaluations/5?expires=1796162400&signature=a41b9f...", description="signed URL of the chart (PNG: confusion matrix or AP per class, and the curves), once Done"),
}
PROJECT_PARAM = {"project_id": "a project of yours: its images judge the model (GET: without it, the evaluation of the model's "
                               "training on its held-out images, for the model's owner)"}
SIGNED_PARAMS = {"expires": "from the signed URL", "signature": "from the signed URL"}


def add_routes(ns: Namespace, core, who) -> None:
    evaluation_model = ns.model("Evaluation", {**EVALUATION_FIELDS, "classes": fields.List(fields.Nested(ns.model("ClassMetrics", CLASS_FIELDS)))})

    def project_id(required: bool) -> int | None:
        return ids.parse_id("project_id", request.args.get("project_id"), required=required)

    @ns.route("/<int:model_id>/evaluation")
    class ModelEvaluation(Resource):
        @ns.doc(params=PROJECT_PARAM)
        @ns.response(200, "the evaluation (its metrics once Done; fields of the other model type absent)", evaluation_model)
        @ns.response(404, "no such model, project or evaluation (code no_evaluation: none yet, saying how to make one)")
        def get(self, model_id):
            """The model's evaluation: of its training (held-out images), or with project_id on that project; metrics once Done."""
            return core.evaluation(model_id, who(model_id), project_id(required=False))

    @ns.route("/<int:model_id>/evaluate")
    class ModelEvaluate(Resource):
        @ns.doc(params={"project_id": "required: a project of yours, of the model's type, with tagged (Classification) or boxed "
                                      "(Detection) images"})
        @ns.response(202, "queued (Pending), or the evaluation already in progress", evaluation_model)
        @ns.response(400, "no project_id, a project of the other type, no labelled images, or no tag the model knows")
        @ns.response(406, "the model is not Trained")
        def post(self, model_id):
            """Evaluate a model you may use (yours, public, built-in) on a project's labelled images, in the background: 202, Pending."""
            return core.evaluate(model_id, who(model_id), project_id(required=False)), 202

    @ns.route("/<int:model_id>/evaluation/file")
    @ns.doc(params=SIGNED_PARAMS)
    class TrainingEvaluationChart(Resource):
        @ns.produces(["image/png"])
        def get(self, model_id):
            """The chart of the training's evaluation (signed URL, no token needed)."""
            return chart(model_id, None)

    @ns.route("/<int:model_id>/evaluation/<int:project_id>/file")
    @ns.doc(params=SIGNED_PARAMS)
    class ProjectEvaluationChart(Resource):
        @ns.produces(["image/png"])
        def get(self, model_id, project_id):
            """The chart of the evaluation on a project (signed URL, no token needed)."""
            return chart(model_id, project_id)

    def chart(model_id: int, project: int | None):
        media = core.evaluation_chart(model_id, project, request.args.get("expires"), request.args.get("signature"))
        return media_files.media_response(media, lambda start, length: core.read_model_file(media, start, length))
