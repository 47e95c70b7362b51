"""Builds the user service's HTTP app and gRPC server from its collaborators."""
from mlstudio.common import grpc_server, http_app
from mlstudio.user.v1 import user_pb2_grpc

from .api import users
from .grpc_api import UserServicer


def create_app(settings, core, readiness=None):
    app, api = http_app.make_app("users", title="ML Studio users", description="Registration and login", readiness=readiness or {}, max_body_bytes=settings.max_json_body_bytes)
    users.register_routes(api, core)
    return app


def build_grpc(settings, core):
    registration = grpc_server.Registration(user_pb2_grpc.add_UserServiceServicer_to_server, UserServicer(core), "mlstudio.user.v1.UserService")
    return grpc_server.build_server(settings.grpc_port, [registration], host=settings.grpc_host)
