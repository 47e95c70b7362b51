"""Builds the project service's HTTP app and gRPC server from its collaborators."""
from mlstudio.common import grpc_server, http_app
from mlstudio.project.v1 import project_pb2_grpc

from .api import projects
from .grpc_api import ProjectServicer


def create_app(settings, core, readiness=None):
    app, api = http_app.make_app("projects", title="ML Studio projects", description="A user's projects", readiness=readiness or {}, max_body_bytes=settings.max_json_body_bytes)
    projects.register_routes(api, core, settings)
    return app


def build_grpc(settings, core):
    registration = grpc_server.Registration(project_pb2_grpc.add_ProjectServiceServicer_to_server, ProjectServicer(core), "mlstudio.project.v1.ProjectService")
    return grpc_server.build_server(settings.grpc_port, [registration], host=settings.grpc_host)
