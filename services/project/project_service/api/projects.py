"""`/projects` routes, as the original API had them."""
from flask import request
from flask_restx import Namespace, Resource, fields

from mlstudio.common.http_app import body_fields, caller

USER_PARAM = {"user_id": "the caller's user id (must match the token)"}


def register_routes(api, core, settings):
    """Adds the `/projects` namespace, bound to `core`, to `api`."""
    ns = Namespace("projects", path="/projects", description="A user's projects")
    project_model = ns.model("Project", {
        "id": fields.Integer,
        "title": fields.String,
        "location": fields.String(description="storage prefix (kept for compatibility)"),
        "description": fields.String,
        "type": fields.String(enum=["Classification", "Detection"]),
        "user": fields.Integer(description="owner's user id"),
        "create_time": fields.String(description="ISO 8601 UTC"),
    })
    new_project = ns.model("NewProject", {
        "title": fields.String(required=True),
        "description": fields.String,
        "type": fields.String(required=True, enum=["Classification", "Detection"]),
    })

    def who() -> int:
        return caller(settings.auth_required)

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
    class Project(Resource):
        @ns.marshal_with(project_model)
        def get(self, project_id):
            """Get one project."""
            return core.get(project_id, who())

        @ns.doc(params={"description": "new description", "title": "new title"})
        @ns.marshal_with(project_model)
        def put(self, project_id):
            """Update title or description (query parameters, as the original, or a body)."""
            changes = {**body_fields(), **{k: v for k, v in request.args.items() if k in ("title", "description", "type")}}
            return core.update(project_id, who(), changes)

        def delete(self, project_id):
            """Delete the project and all its videos, images and models."""
            core.delete(project_id, who())
            return {"message": "success"}

    api.add_namespace(ns)
