"""`GET /projects/<id>/duplicates`: a project's groups of near-duplicate images.

In the image service with the project's other dataset routes (the gateway's regex route for
`/projects/<id>/(exports|imports|duplicates)`).
"""
from flask_restx import Namespace, Resource, fields
from mlstudio.common.http_app import caller

from .images import declare_models


def register_routes(api, core, settings):
    ns = Namespace("duplicates", path="/projects", description="Near-duplicate images of a project")
    image_model, _, _ = declare_models(ns)
    group_model = ns.model("DuplicateGroup", {
        "images": fields.List(fields.Nested(image_model), description="near-identical images, oldest first"),
    })

    @ns.route("/<int:project_id>/duplicates")
    class Duplicates(Resource):
        @ns.marshal_list_with(group_model)
        def get(self, project_id):
            """Groups of near-duplicate images (perceptual hash: at most 6 of 64 bits and 16 of 255
            brightness apart), by their oldest image; exact copies cannot be uploaded twice."""
            return core.near_duplicates(caller(settings.auth_required), project_id)

    api.add_namespace(ns)
