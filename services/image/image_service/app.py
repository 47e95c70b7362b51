"""Builds the image service's HTTP app and gRPC server from its collaborators."""
from mlstudio.common import grpc_server, http_app
from mlstudio.image.v1 import image_pb2_grpc

from .api import duplicates as duplicate_routes
from .api import exports as export_routes
from .api import images
from .api import imports as import_routes
from .api import relabels as relabel_routes
from .grpc_api import ImageServicer


def create_app(settings, core, readiness=None, exports=None, imports=None, relabels=None):
    app, api = http_app.make_app("images", title="ML Studio images", description="A project's images, in tag collections",
                                 readiness=readiness or {}, max_body_bytes=settings.max_upload_bytes)
    images.register_routes(api, core, settings)
    duplicate_routes.register_routes(api, core, settings)
    if exports is not None:
        export_routes.register_routes(api, exports, settings)
    if imports is not None:
        import_routes.register_routes(api, imports, settings)
    if relabels is not None:
        relabel_routes.register_routes(api, relabels, settings)
    return app


def build_grpc(settings, core):
    registration = grpc_server.Registration(
        image_pb2_grpc.add_ImageServiceServicer_to_server, ImageServicer(core), "mlstudio.image.v1.ImageService")
    return grpc_server.build_server(settings.grpc_port, [registration], host=settings.grpc_host)
