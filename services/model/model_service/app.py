"""Builds the model service's HTTP app and gRPC server from its collaborators."""
from mlstudio.common import grpc_server, http_app
from mlstudio.model.v1 import model_pb2_grpc

from .api import models
from .grpc_api import ModelServicer

# Room for the form fields and the label file next to the model file.
FORM_OVERHEAD_BYTES = 4 << 20


def max_body_bytes(settings) -> int:
    return settings.model_upload_max_bytes + FORM_OVERHEAD_BYTES


def create_app(settings, core, readiness=None):
    app, api = http_app.make_app("models", title="ML Studio models", description="Uploaded models, served by TensorFlow Serving",
                                 readiness=readiness or {}, max_body_bytes=max_body_bytes(settings))
    models.register_routes(api, core, settings)
    return app


def build_grpc(settings, core):
    registration = grpc_server.Registration(model_pb2_grpc.add_ModelServiceServicer_to_server, ModelServicer(core), "mlstudio.model.v1.ModelService")
    return grpc_server.build_server(settings.grpc_port, [registration], host=settings.grpc_host)
