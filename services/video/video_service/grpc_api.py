"""gRPC adapter of the video service."""
from mlstudio.video.v1 import video_pb2, video_pb2_grpc


def to_proto(video: dict) -> video_pb2.Video:
    return video_pb2.Video(
        id=video["id"], project_id=video["project"], user_id=video["user"], title=video["title"],
        description=video["description"], status=video["status"],
        progress=video_pb2.Progress(done=video["progress"]["done"], total=video["progress"]["total"]),
        frame_count=video["frame_count"] or 0, fps=video["fps"] or 0.0, interval=video["interval"] or 0,
        model_id=video["model"], error=video["error"] or "")


class VideoServicer(video_pb2_grpc.VideoServiceServicer):
    def __init__(self, core):
        self.core = core

    def GetVideo(self, request, context):
        return video_pb2.GetVideoResponse(video=to_proto(self.core.get(request.video_id, request.user_id)))

    def GetVideoOwner(self, request, context):
        return video_pb2.GetVideoOwnerResponse(user_id=self.core.owner(request.video_id))

    def DeleteProjectData(self, request, context):
        return video_pb2.DeleteProjectDataResponse(deleted=self.core.delete_project_data(request.project_id))
