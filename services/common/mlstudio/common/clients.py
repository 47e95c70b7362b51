"""Typed gRPC clients of the services, for the other services to call.

Each wraps the generated stub with deadlines, request-id forwarding and error mapping
(`grpc_client.Client`). A service that is not deployed (empty address) is represented by
`None` where it is optional, never by a special case in business code.
"""
from __future__ import annotations

from collections.abc import Iterator

from mlstudio.image.v1 import image_pb2, image_pb2_grpc
from mlstudio.model.v1 import model_pb2, model_pb2_grpc
from mlstudio.project.v1 import project_pb2, project_pb2_grpc
from mlstudio.video.v1 import video_pb2, video_pb2_grpc

from .deadlines import NONE, Deadline
from .grpc_client import Client


class ProjectClient(Client):
    peer = "project"

    def __init__(self, address: str, deadline_s: float = 10.0):
        super().__init__(address, project_pb2_grpc.ProjectServiceStub, deadline_s)

    def get_project(self, project_id: int, user_id: int) -> project_pb2.Project:
        """The user's project; NotFound when missing or someone else's."""
        request = project_pb2.GetProjectRequest(project_id=project_id, user_id=user_id)
        return self._call(self.stub.GetProject, request, idempotent=True).project


class ImageClient(Client):
    peer = "image"

    def __init__(self, address: str, deadline_s: float = 30.0):
        super().__init__(address, image_pb2_grpc.ImageServiceStub, deadline_s)

    def create_images(self, project_id: int, user_id: int, images: list[image_pb2.NewImage]) -> list[image_pb2.Image]:
        request = image_pb2.CreateImagesRequest(project_id=project_id, user_id=user_id, images=images)
        # Idempotent on (video_id, frame_index) for frames, so frame batches may be retried.
        idempotent = all(image.video_id for image in images)
        return list(self._call(self.stub.CreateImages, request, idempotent=idempotent).images)

    def list_images(self, project_id: int, user_id: int, *, tag: str = "", video_id: int = 0, review: bool = False,
                    sort: str = "") -> list[image_pb2.Image]:
        """A project's images (one tag's, one video's); `review`: only those waiting for review;
        `sort="score"`: lowest score first."""
        request = image_pb2.ListImagesRequest(project_id=project_id, user_id=user_id, tag=tag, video_id=video_id,
                                              review=review, sort=sort)
        return list(self._call(self.stub.ListImages, request, idempotent=True).images)

    def stream_dataset(self, project_id: int, user_id: int, deadline_s: float = 600.0, *,
                       include_unchecked: bool = False) -> Iterator[image_pb2.DatasetItem]:
        """The project's checked images with their bytes (with `include_unchecked`, all of them)."""
        request = image_pb2.StreamDatasetRequest(project_id=project_id, user_id=user_id, include_unchecked=include_unchecked)
        return self._stream(self.stub.StreamDataset, request, deadline_s=deadline_s)

    def delete_images_by_video(self, video_id: int, project_id: int) -> int:
        request = image_pb2.DeleteImagesByVideoRequest(video_id=video_id, project_id=project_id)
        return self._call(self.stub.DeleteImagesByVideo, request, idempotent=True).deleted

    def delete_project_data(self, project_id: int) -> int:
        request = image_pb2.DeleteProjectDataRequest(project_id=project_id)
        return self._call(self.stub.DeleteProjectData, request, idempotent=True, deadline_s=120).deleted


class ModelClient(Client):
    peer = "model"

    def __init__(self, address: str, deadline_s: float = 60.0):
        super().__init__(address, model_pb2_grpc.ModelServiceStub, deadline_s)

    def get_model(self, model_id: int, user_id: int) -> model_pb2.Model:
        """A model the user may read (own or public); NotFound otherwise."""
        request = model_pb2.GetModelRequest(model_id=model_id, user_id=user_id)
        return self._call(self.stub.GetModel, request, idempotent=True).model

    def classify(self, model_id: int, user_id: int, images: list[bytes], deadline: Deadline = NONE) -> list[model_pb2.Classification]:
        """The model's label and score per image; within `deadline` (the caller's request's)."""
        request = model_pb2.ClassifyRequest(model_id=model_id, user_id=user_id, images=images)
        return list(self._call(self.stub.Classify, request, idempotent=True, deadline=deadline).results)

    def detect(self, model_id: int, user_id: int, images: list[bytes], threshold: float = 0.0,
               deadline: Deadline = NONE) -> list[model_pb2.ImageDetections]:
        request = model_pb2.DetectRequest(model_id=model_id, user_id=user_id, images=images, threshold=threshold)
        return list(self._call(self.stub.Detect, request, idempotent=True, deadline=deadline).results)

    def delete_project_data(self, project_id: int) -> int:
        request = model_pb2.DeleteProjectDataRequest(project_id=project_id)
        return self._call(self.stub.DeleteProjectData, request, idempotent=True, deadline_s=120).deleted


class VideoClient(Client):
    peer = "video"

    def __init__(self, address: str, deadline_s: float = 10.0):
        super().__init__(address, video_pb2_grpc.VideoServiceStub, deadline_s)

    def get_video(self, video_id: int, user_id: int) -> video_pb2.Video:
        request = video_pb2.GetVideoRequest(video_id=video_id, user_id=user_id)
        return self._call(self.stub.GetVideo, request, idempotent=True).video

    def video_owner(self, video_id: int) -> int:
        """Who owns the video (legacy mode's id-only requests act for them); NotFound when none."""
        request = video_pb2.GetVideoOwnerRequest(video_id=video_id)
        return self._call(self.stub.GetVideoOwner, request, idempotent=True).user_id

    def delete_project_data(self, project_id: int) -> int:
        request = video_pb2.DeleteProjectDataRequest(project_id=project_id)
        return self._call(self.stub.DeleteProjectData, request, idempotent=True, deadline_s=120).deleted
