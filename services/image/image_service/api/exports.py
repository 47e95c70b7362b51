"""`/projects/<id>/exports` routes: ask for a dataset export, follow it, download its zip.

They live in the image service, which owns the images; the gateway sends
`/projects/<id>/exports...` here (a regex route ahead of the project service's prefix).
"""
from flask import request
from flask_restx import Namespace, Resource, fields
from mlstudio.common import errors, media_files
from mlstudio.common.http_app import caller


def register_routes(api, exports, settings):
    ns = Namespace("exports", path="/projects", description="Dataset exports of a project (zip: ImageNet folders, COCO, YOLO, VOC, CSV)")
    request_model = ns.model("ExportRequest", {
        "format": fields.String(required=True, enum=["imagenet", "coco", "yolo", "voc", "csv"],
                                description="imagenet (both types), csv (both), coco, yolo, voc (Detection projects)"),
        "tag": fields.String(example="bottle", description="only this tag's images (default: all)"),
        "checked_only": fields.Boolean(example=True, description="only checked images (isTrain)", default=False),
        "val_fraction": fields.Float(example=0.2, description="share of each tag's checked images in the val split, 0 <= f < 1", default=0.0),
        "seed": fields.Integer(example=0, description="the same seed gives the same split", default=0),
    })
    export_model = ns.model("Export", {
        "id": fields.Integer(example=12),
        "project": fields.Integer(example=1),
        "format": fields.String(example="coco"),
        "tag": fields.String(example="bottle"),
        "checked_only": fields.Boolean(example=True),
        "val_fraction": fields.Float(example=0.2),
        "seed": fields.Integer(example=0),
        "status": fields.String(example="done", description="queued, running, done, failed or cancelled"),
        "progress": fields.Raw(example={"done": 119, "total": 119}, description="{done, total} images"),
        "error": fields.String(example="the object store is unavailable"),
        "count": fields.Integer(example=119, description="images in the zip"),
        "splits": fields.Raw(example={"train": 96, "val": 23}, description="images per split"),
        "size": fields.Integer(example=1843021, description="bytes of the zip"),
        "url": fields.String(example="/files/exports/12?expires=1796162400&signature=5e77a1...", description="signed, expiring URL of the zip when done; needs no token"),
        "create_time": fields.String(example="2026-12-01T19:46:17.618Z"),
        "expires_at": fields.String(example="2026-12-02T19:46:17.618Z", description="when the zip and this record are removed"),
    })

    def who() -> int:
        return caller(settings.auth_required)

    @ns.route("/<int:project_id>/exports")
    class Exports(Resource):
        @ns.marshal_list_with(export_model)
        def get(self, project_id):
            """The project's exports, newest first."""
            return exports.list(who(), project_id)

        @ns.expect(request_model)
        @ns.marshal_with(export_model, code=202)
        def post(self, project_id):
            """Start an export; answers at once (202), the zip is written in the background."""
            body = request.get_json(silent=True)
            if body is None:
                raise errors.InvalidArgument("send a JSON object such as {\"format\": \"coco\"}", code="invalid_body")
            return exports.create(who(), project_id, body), 202

    @ns.route("/<int:project_id>/exports/<int:export_id>")
    class OneExport(Resource):
        @ns.marshal_with(export_model)
        def get(self, project_id, export_id):
            """An export's status and progress, and the zip's signed URL once done."""
            return exports.get(who(), project_id, export_id)

    @ns.route("/<int:project_id>/exports/<int:export_id>/file")
    @ns.doc(params={"expires": "from the signed URL", "signature": "from the signed URL"}, security=[])
    class ExportFile(Resource):
        def get(self, project_id, export_id):
            """The zip, for a signed URL (no token needed)."""
            media = exports.media(project_id, export_id, request.args.get("expires"), request.args.get("signature"))
            return media_files.media_response(media, lambda start, length: exports.read(media, start, length))

    api.add_namespace(ns)
