"""The API's Image, built from the image service's gRPC answer, for `GET /videos/<id>`.

The image service owns images and their JSON; this renders the same shape from what its
`ListImages` returns (with the same detection forms, mlstudio.common.detections), so a video's
`images` read like `/images/byVideo/<id>`'s.
"""
from __future__ import annotations

from mlstudio.common.detections import as_score, boxes, captions, from_boxes
from mlstudio.common.vocabulary import DETECTION


def image_json(image, project_type: str) -> dict:
    """One `image_pb2.Image` as the API shows it."""
    detections = from_boxes(image.detections) if project_type == DETECTION else None
    return {
        "id": image.id,
        "title": image.title,
        "location": image.location,
        "description": image.description,
        "url": image.url,
        "type": image.tag,
        "user": image.user_id,
        "project": image.project_id,
        "isTrain": image.is_train,
        "captions": captions(detections),
        "boxes": boxes(detections),
        "video": image.video_id or None,
        "frame_index": image.frame_index if image.video_id else None,
        "timestamp_ms": image.timestamp_ms if image.video_id else None,
        "score": as_score(image.score) if image.HasField("score") else None,
        "detections": detections,
        "content_type": image.content_type,
        "width": image.width or None,
        "height": image.height or None,
        "create_time": image.create_time or None,
    }
