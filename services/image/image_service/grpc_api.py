"""gRPC adapter of the image service, for the video, model and project services."""
from mlstudio.common import detections as detection_forms
from mlstudio.image.v1 import image_pb2, image_pb2_grpc

from .core import NewFrame, Page, Selection, sort_by_score


def to_proto(image: dict) -> image_pb2.Image:
    """An API Image (see `core.public_image`) as a protobuf message."""
    message = image_pb2.Image(
        id=image["id"], project_id=image["project"], user_id=image["user"], tag=image["type"], title=image["title"],
        description=image["description"], video_id=image["video"] or 0, frame_index=image["frame_index"] or 0,
        timestamp_ms=image["timestamp_ms"] or 0, is_train=image["isTrain"], content_type=image["content_type"],
        url=image["url"], location=image["location"], create_time=image["create_time"],
        width=image["width"] or 0, height=image["height"] or 0,
        detections=[image_pb2.Detection(label=d["label"], score=d["score"], x1=x1, y1=y1, x2=x2, y2=y2)
                    for d in image["detections"] or () for x1, y1, x2, y2 in [d["box"]]],  # score None: left absent
    )
    if image["score"] is not None:
        message.score = image["score"]
    return message


def to_frame(new: image_pb2.NewImage) -> NewFrame:
    return NewFrame(
        content=new.content, tag=new.tag, title=new.title, video_id=new.video_id, frame_index=new.frame_index,
        timestamp_ms=new.timestamp_ms, score=new.score if new.HasField("score") else None,
        detections=detection_forms.from_boxes(new.detections),
        is_train=new.is_train if new.HasField("is_train") else None,
    )


def selection(review: bool, sort: str) -> Selection:
    return Selection(review=review, by_score=sort_by_score(sort))


class ImageServicer(image_pb2_grpc.ImageServiceServicer):
    def __init__(self, core):
        self.core = core

    def CreateImages(self, request, context):
        images = self.core.create_frames(request.user_id, request.project_id, [to_frame(new) for new in request.images])
        return image_pb2.CreateImagesResponse(images=[to_proto(image) for image in images])

    def ListImages(self, request, context):
        images = self.core.list_images(
            request.user_id, request.project_id, tag=request.tag or None, video_id=request.video_id or None,
            page=Page(limit=request.limit or None, offset=max(0, request.offset)),
            selection=selection(request.review, request.sort))
        return image_pb2.ListImagesResponse(images=[to_proto(image) for image in images])

    def StreamDataset(self, request, context):
        for doc, content in self.core.dataset(request.user_id, request.project_id, include_unchecked=request.include_unchecked):
            yield image_pb2.DatasetItem(image_id=doc["_id"], tag=doc["tag"], content=content, content_type=doc["content_type"])

    def DeleteImagesByVideo(self, request, context):
        return image_pb2.DeleteImagesByVideoResponse(deleted=self.core.delete_by_video(request.video_id, request.project_id or None))

    def DeleteProjectData(self, request, context):
        return image_pb2.DeleteProjectDataResponse(deleted=self.core.delete_project_data(request.project_id))
