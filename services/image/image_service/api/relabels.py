"""`/projects/<id>/relabels` routes: re-label a project's images with a model, follow it, cancel it.

They live in the image service, which owns the images; the gateway sends
`/projects/<id>/relabels...` here, as it does the exports.
"""
from flask import request
from flask_restx import Namespace, Resource, fields
from mlstudio.common import errors
from mlstudio.common.http_app import caller


def register_routes(api, relabels, settings):
    ns = Namespace("relabels", path="/projects", description="Re-labelling a project's images with a model")
    request_model = ns.model("RelabelRequest", {
        "model_id": fields.Integer(example=5, required=True, description="a model the caller may use, of the project's type"),
        "scope": fields.String(enum=["review", "all"], default="review",
                               description="review: the images waiting for review; all: every image whose label is a "
                                           "model's. A label a person gave or checked is never changed"),
        "tag": fields.String(example="bottle", description="only this tag's images"),
        "video_id": fields.Integer(example=3, description="only this video's frames"),
        "threshold": fields.Float(example=0.5, description="Detection: the score a box needs (0, 1]; default the model's"),
    })
    relabel_model = ns.model("Relabel", {
        "id": fields.Integer(example=7),
        "project": fields.Integer(example=1),
        "model_id": fields.Integer(example=5),
        "scope": fields.String(example="review"),
        "tag": fields.String(example="bottle"),
        "video_id": fields.Integer(example=3),
        "status": fields.String(example="running", description="queued, running, done, failed or cancelled"),
        "progress": fields.Raw(example={"done": 40, "total": 119}, description="{done, total} images"),
        "changed": fields.Integer(example=12, description="images whose labels were written so far"),
        "error": fields.String(example="model 5 is not available: it is still training"),
        "create_time": fields.String(example="2026-12-01T19:46:17.618Z"),
        "expires_at": fields.String(example="2026-12-02T19:46:17.618Z", description="when this record is removed"),
    })

    def who() -> int:
        return caller(settings.auth_required)

    @ns.route("/<int:project_id>/relabels")
    class Relabels(Resource):
        @ns.marshal_list_with(relabel_model)
        def get(self, project_id):
            """The project's re-labelling runs, newest first."""
            return relabels.list(who(), project_id)

        @ns.expect(request_model)
        @ns.marshal_with(relabel_model, code=202)
        def post(self, project_id):
            """Start re-labelling; answers at once (202), the model runs in the background."""
            body = request.get_json(silent=True)
            if body is None:
                raise errors.InvalidArgument("send a JSON object such as {\"model_id\": 7}", code="invalid_body")
            return relabels.create(who(), project_id, body), 202

    @ns.route("/<int:project_id>/relabels/<int:relabel_id>")
    class OneRelabel(Resource):
        @ns.marshal_with(relabel_model)
        def get(self, project_id, relabel_id):
            """A run's status, progress and how many images it changed."""
            return relabels.get(who(), project_id, relabel_id)

    @ns.route("/<int:project_id>/relabels/<int:relabel_id>/cancel")
    class CancelRelabel(Resource):
        @ns.marshal_with(relabel_model, code=202)
        def post(self, project_id, relabel_id):
            """Stop a run at its next batch (what it wrote stays); 406 once it has finished."""
            return relabels.cancel(who(), project_id, relabel_id), 202

    api.add_namespace(ns)
