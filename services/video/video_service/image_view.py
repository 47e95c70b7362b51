"""The API's Image, built from the image service's gRPC answer, for `GET /videos/<id>`.

The image service owns images and their JSON; this renders the same shape from what its
`ListImages` returns, so a video's `images` read like `/images/byVideo/<id>`'s: scores without
the float32 noise of protobuf (6 decimals), box corners to 2 decimals, and for Detection images
`captions` and `boxes` in the original string forms the frontend parses.
"""
from __future__ import annotations

import math

DETECTION = "Detection"


def _score(value: float) -> float:
    """0.9 rather than 0.8999999761, as the image service shows it."""
    return round(float(value), 6)


def _pixel(value: float) -> int:
    """Nearest integer pixel, halves rounded up."""
    return math.floor(value + 0.5)


def detections_json(image) -> list[dict]:
    return [{"label": d.label, "score": _score(d.score), "box": [round(float(v), 2) for v in (d.x1, d.y1, d.x2, d.y2)]}
            for d in image.detections]


def captions(detections: list[dict]) -> str:
    """`",cat 0.923,dog 0.500"`."""
    return "".join(f",{d['label']} {d['score']:.3f}" for d in detections)


def boxes(detections: list[dict]) -> str:
    """`",[10 20 110 220],[5 5 50 50]"`."""
    return "".join(",[{} {} {} {}]".format(*(_pixel(v) for v in d["box"])) for d in detections)


def image_json(image, project_type: str) -> dict:
    """One `image_pb2.Image` as the API shows it."""
    detections = detections_json(image) if project_type == DETECTION else None
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
        "captions": captions(detections) if detections is not None else None,
        "boxes": boxes(detections) if detections is not None else None,
        "video": image.video_id or None,
        "frame_index": image.frame_index if image.video_id else None,
        "timestamp_ms": image.timestamp_ms if image.video_id else None,
        "score": _score(image.score) if image.HasField("score") else None,
        "detections": detections,
        "content_type": image.content_type,
        "width": image.width or None,
        "height": image.height or None,
        "create_time": image.create_time or None,
    }
