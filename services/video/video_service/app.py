"""Builds the video service's HTTP app and gRPC server from its collaborators."""
from mlstudio.common import grpc_server, http_app
from mlstudio.video.v1 import video_pb2_grpc

from .api import videos
from .grpc_api import VideoServicer


def create_app(settings, core, readiness=None):
    app, api = http_app.make_app("videos", title="ML Studio videos", description="Videos split into auto-labelled frames",
                                 readiness=readiness or {}, max_body_bytes=settings.max_upload_bytes)
    api.add_namespace(videos.build_namespace(core, settings))
    return app


def build_grpc(settings, core):
    registration = grpc_server.Registration(video_pb2_grpc.add_VideoServiceServicer_to_server, VideoServicer(core), "mlstudio.video.v1.VideoService")
    return grpc_server.build_server(settings.grpc_port, [registration], host=settings.grpc_host)
