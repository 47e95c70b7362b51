"""`/projects` routes, as the original API had them."""
from flask import request
from flask_restx import Namespace, Resource, fields

from mlstudio.common.http_app import body_fields, caller
from mlstudio.common.vocabulary import CLASSIFICATION, PROJECT_TYPES

from ..core import SETTINGS

USER_PARAM = {"user_id": "the caller's user id (must match the token)"}
ID_ONLY_USER_PARAM = {"user_id": "optional: the caller's user id (must match the token; in legacy mode, without it the "
                                 "request acts for the project's owner)"}


def register_routes(api, core, settings):
    """Adds the `/projects` namespace, bound to `core`, to `api`."""
    ns = Namespace("projects", path="/projects", description="A user's projects")
    project_model = ns.model("Project", {
        "id": fields.Integer(example=1),
        "title": fields.String(example="Light and dark"),
        "location": fields.String(description="storage prefix (kept for compatibility)", example="projects/1/"),
        "description": fields.String(example="my first project"),
        "type": fields.String(enum=list(PROJECT_TYPES)),
        "user": fields.Integer(description="owner's user id", example=1),
        "create_time": fields.String(description="ISO 8601 UTC", example="2026-12-01T19:46:17.618Z"),
        "threshold": fields.Float(description="Detection: the score (0, 1] a detection needs when a prediction or "
                                              "video upload names none (default 0.4)", example=0.4),
        "review_threshold": fields.Float(description="a model's label scoring at least this (0 to 1) is checked "
                                                     "(isTrain); below it, it waits for review. Default 0.8", example=0.8),
    })
    updated_model = ns.clone("UpdatedProject", project_model, {
        "message": fields.String(example="success", description='"success" (the original UI tests for it)'),
    })
    new_project = ns.model("NewProject", {
        "title": fields.String(required=True, example="Light and dark"),
        "description": fields.String(example="my first project"),
        "type": fields.String(required=True, enum=list(PROJECT_TYPES), example=CLASSIFICATION),
        "threshold": fields.Float(description="optional, (0, 1]; default 0.4 (see Project)", example=0.4),
        "review_threshold": fields.Float(description="optional, 0 to 1; default 0.8 (see Project)", example=0.8),
    })

    def who(project_id: int | None = None) -> int:
        """The caller; on a route naming a project, legacy mode's requests without a user act for its owner."""
        return caller(settings.auth_required, None if project_id is None else lambda: core.owner(project_id))

    @ns.route("/all")
    @ns.doc(params=USER_PARAM)
    class Projects(Resource):
        @ns.marshal_list_with(project_model)
        def get(self):
            """List the caller's projects."""
            return core.list(who())

        @ns.expect(new_project)
        @ns.response(201, "Created", project_model)
        def post(self):
            """Create a project (JSON or form body)."""
            return core.create(who(), body_fields()), 201

    @ns.route("/<int:project_id>")
    @ns.doc(params=ID_ONLY_USER_PARAM)
    class Project(Resource):
        @ns.marshal_with(project_model)
        def get(self, project_id):
            """Get one project."""
            return core.get(project_id, who(project_id))

        @ns.doc(params={"description": "new description", "title": "new title",
                        "threshold": "new detection threshold, (0, 1]",
                        "review_threshold": "new review threshold, 0 to 1 (labels already filed keep their state)"})
        @ns.marshal_with(updated_model)
        def put(self, project_id):
            """Update title, description or a setting (query parameters, as the original, or a body)."""
            changes = {**body_fields(),
                       **{k: v for k, v in request.args.items() if k in ("title", "description", "type", *SETTINGS)}}
            # The original UI reports "Failed" unless the answer says success.
            return {**core.update(project_id, who(project_id), changes), "message": "success"}

        def delete(self, project_id):
            """Delete the project and all its videos, images and models."""
            core.delete(project_id, who(project_id))
            return {"message": "success"}

    api.add_namespace(ns)
