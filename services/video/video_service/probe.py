"""A quick look at an uploaded file before it is accepted: is it a video OpenCV can decode?

The container is recognised by its first bytes (so a picture or a text file is refused as "not a
video", 415, and a damaged video as "damaged", 422, each with a sentence that says why), then
OpenCV (FFmpeg backend) opens it and decodes its first frame. The container's frame count and
frame rate are read as estimates only: the worker counts frames by decoding them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2

from mlstudio.common import errors

# (offset, magic bytes, container name, content type) of the video containers FFmpeg reads.
_VIDEO_SIGNATURES = [
    (4, b"ftyp", "MP4/QuickTime", "video/mp4"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM", "video/webm"),
    (0, b"RIFF", "AVI", "video/x-msvideo"),
    (0, b"FLV", "FLV", "video/x-flv"),
    (0, b"OggS", "Ogg", "video/ogg"),
    (0, b"\x00\x00\x01\xba", "MPEG program stream", "video/mpeg"),
    (0, b"\x00\x00\x01\xb3", "MPEG video", "video/mpeg"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMV", "video/x-ms-asf"),
    (4, b"moov", "QuickTime", "video/quicktime"),
    (4, b"mdat", "QuickTime", "video/quicktime"),
    (4, b"wide", "QuickTime", "video/quicktime"),
    (4, b"free", "QuickTime", "video/quicktime"),
]
# Pictures FFmpeg would also "open" as a one-frame video; an upload of one is a mistake to point out.
_IMAGE_SIGNATURES = [
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"BM", "a BMP image"),
    (8, b"WEBP", "a WebP image"),
]
_TS_PACKET = 188


@dataclass(frozen=True)
class VideoInfo:
    """What the probe learnt; counts are the container's claims, not decoded truths."""

    container: str
    content_type: str
    frame_count: int
    fps: float
    width: int
    height: int

    @property
    def duration_ms(self) -> int:
        return int(self.frame_count * 1000 / self.fps) if self.fps > 0 and self.frame_count > 0 else 0


def _container(head: bytes) -> tuple[str, str] | None:
    for offset, magic, name, content_type in _VIDEO_SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            if name == "AVI" and head[8:12] != b"AVI ":
                continue
            return name, content_type
    if len(head) > 2 * _TS_PACKET and head[0] == head[_TS_PACKET] == head[2 * _TS_PACKET] == 0x47:
        return "MPEG transport stream", "video/mp2t"
    return None


def _image_kind(head: bytes) -> str | None:
    for offset, magic, name in _IMAGE_SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


def _number(capture, prop) -> float:
    value = capture.get(prop)
    return value if math.isfinite(value) and value > 0 else 0.0


def open_capture(path: Path):
    """An OpenCV capture of `path` through FFmpeg (never a camera or image-sequence backend)."""
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)


def probe(path: Path) -> VideoInfo:
    """The video's container facts; UnsupportedMediaType (415) for a file that is no video,
    Unprocessable (422) for a video that cannot be decoded."""
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if not head:
        raise errors.Unprocessable("the uploaded file is empty", code="empty_file")
    image = _image_kind(head)
    if image:
        raise errors.UnsupportedMediaType(f"the uploaded file is {image}, not a video", code="not_a_video")
    container = _container(head)
    capture = open_capture(path)
    try:
        if not capture.isOpened():
            if container is None:
                raise errors.UnsupportedMediaType("the uploaded file is not a video format this service can read (MP4, MOV, AVI, MKV, WebM, MPEG, ...)", code="not_a_video")
            raise errors.Unprocessable(f"the uploaded {container[0]} video is damaged or truncated: it cannot be opened", code="damaged_video")
        ok, frame = capture.read()
        if not ok or frame is None:
            raise errors.Unprocessable("the uploaded video has no frame that can be decoded (empty, truncated or an unsupported codec)", code="no_frames")
        name, content_type = container or ("video", "video/mp4")
        return VideoInfo(
            container=name,
            content_type=content_type,
            frame_count=int(_number(capture, cv2.CAP_PROP_FRAME_COUNT)),
            fps=round(_number(capture, cv2.CAP_PROP_FPS), 3),
            width=int(frame.shape[1]),
            height=int(frame.shape[0]),
        )
    finally:
        capture.release()
