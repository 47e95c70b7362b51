"""`/projects/<id>/imports` routes: bring a dataset zip into a project, follow the import.

Like exports, they live in the image service (which owns the images), reached through the
gateway's regex route for a project's datasets.
"""
from flask import request
from flask_restx import Namespace, Resource, fields
from mlstudio.common.http_app import caller

from ..uploads import UploadedFile


def register_routes(api, imports, settings):
    ns = Namespace("imports", path="/projects", description="Dataset imports into a project (zip: ImageNet folders, COCO, YOLO, VOC, CSV)")
    import_model = ns.model("Import", {
        "id": fields.Integer(example=4),
        "project": fields.Integer(example=1),
        "format": fields.String(example="yolo", description="told from the zip's content: imagenet, coco, yolo, voc or csv"),
        "file_name": fields.String(example="bottles.zip"),
        "status": fields.String(example="done", description="queued, running, done, failed or cancelled"),
        "progress": fields.Raw(example={"done": 120, "total": 120}, description="{done, total} images"),
        "error": fields.String(example="the zip holds no images in a format the studio reads"),
        "report": fields.Raw(example={"imported": 118, "existing": 1, "skipped_count": 1, "skipped": [{"file": "notes.txt", "reason": "not an image"}]}, description="{imported, existing (bytes already in the project), skipped_count, skipped: [{file, reason}]}"),
        "create_time": fields.String(example="2026-12-01T19:46:17.618Z"),
        "expires_at": fields.String(example="2026-12-02T19:46:17.618Z", description="when this record is removed"),
    })

    def who() -> int:
        return caller(settings.auth_required)

    @ns.route("/<int:project_id>/imports")
    class Imports(Resource):
        @ns.marshal_list_with(import_model)
        def get(self, project_id):
            """The project's imports, newest first."""
            return imports.list(who(), project_id)

        @ns.doc(params={"file": {"in": "formData", "type": "file", "description": "the dataset zip"}})
        @ns.marshal_with(import_model, code=202)
        def post(self, project_id):
            """Import a dataset zip; it is checked at once (4xx, nothing stored, when it is unsafe
            or not a dataset), then imported in the background (202)."""
            user = who()
            upload = request.files.get("file")
            given = UploadedFile(upload.filename or "", upload.stream) if upload is not None else None
            return imports.create(user, project_id, given), 202

    @ns.route("/<int:project_id>/imports/<int:import_id>")
    class OneImport(Resource):
        @ns.marshal_with(import_model)
        def get(self, project_id, import_id):
            """An import's status, progress and report."""
            return imports.get(who(), project_id, import_id)

    api.add_namespace(ns)
