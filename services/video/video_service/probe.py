"""A quick look at an uploaded file before it is accepted: is it a video OpenCV can decode?

The container is recognised by its first bytes (so a picture or a text file is refused as "not a
video", 415, and a damaged video as "damaged", 422, each with a sentence that says why), then
OpenCV (FFmpeg backend) opens it and decodes its first frame. The container's frame count and
frame rate are read as estimates only: the worker counts frames by decoding them.

Two things would otherwise be found only by the worker, frame after frame, so they are refused
here (422) at the cost of a few reads:
- frames larger than the frame limit (the image service would refuse to store each of them),
  read from the stream's header before any frame is decoded;
- a file cut short (an interrupted copy or upload): containers that record their own length
  (MP4/QuickTime boxes, AVI RIFF chunks, a Matroska/WebM segment of known size) say where they
  end, and a file that ends before that is truncated. Containers that do not (MPEG streams, FLV,
  Ogg, live-recorded WebM) are checked by the worker instead, which fails a video whose frames
  end well before the count its container records (`frames.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mlstudio.common import errors
from mlstudio.common.lazy import lazy_module

# OpenCV and numpy (about 33 MB resident) load with the first upload probed, not when the video
# service starts: an idle service never needs them.
cv2 = lazy_module("cv2")

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
# JPEG (how frames are stored) cannot hold a side longer than this.
MAX_JPEG_SIDE = 65_500
# Top-level boxes or chunks read to find where a file should end; a file with more is not checked.
_MAX_CHUNKS = 200_000


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


def container_of(path: Path) -> str | None:
    """The container's name, from the file's first bytes (None when none is recognised)."""
    with open(path, "rb") as handle:
        found = _container(handle.read(1024))
    return found[0] if found else None


def _image_kind(head: bytes) -> str | None:
    for offset, magic, name in _IMAGE_SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


def _number(capture, prop) -> float:
    value = capture.get(prop)
    return value if math.isfinite(value) and value > 0 else 0.0


def frame_count(capture) -> float:
    """The frame count the container records (0 when it records none)."""
    return _number(capture, cv2.CAP_PROP_FRAME_COUNT)


def open_capture(path: Path):
    """An OpenCV capture of `path` through FFmpeg (never a camera or image-sequence backend)."""
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)


def _top_level_chunks(handle, size: int, big_endian: bool) -> tuple[list[bytes], int | None]:
    """The kinds of a file's size-prefixed top-level chunks, and where the last one says the file
    ends (None when it cannot tell). MP4 boxes: 4-byte big-endian size including the header (1:
    a 64-bit size follows; 0: to the end of the file), then the kind; RIFF chunks: the kind, then
    a 4-byte little-endian size of the data, padded to an even length."""
    kinds: list[bytes] = []
    offset = 0
    for _ in range(_MAX_CHUNKS):
        if offset + 8 > size:
            return kinds, offset
        handle.seek(offset)
        header = handle.read(16)
        kind = header[4:8] if big_endian else header[0:4]
        if not all(32 <= byte < 127 for byte in kind):
            return kinds, None  # trailing bytes that are no box or chunk: the file's own end is unknown
        kinds.append(kind)
        if big_endian:
            length = int.from_bytes(header[0:4], "big")
            if length == 0:
                return kinds, size
            if length == 1:
                if len(header) < 16:
                    return kinds, offset + 16
                length = int.from_bytes(header[8:16], "big")
            if length < 8:
                return kinds, None  # not a box structure this check understands; the decoder will tell
            offset += length
        else:
            length = int.from_bytes(header[4:8], "little")
            offset += 8 + length + (length & 1)
    return kinds, None


def records_frame_count(path: Path) -> bool:
    """Whether the container's frame count is the number of frames it stores: an MP4/QuickTime
    file indexes every sample in its `moov` box (a fragmented one, with `moof` boxes, does not,
    and other containers estimate the count from their duration and frame rate)."""
    if container_of(path) not in ("MP4/QuickTime", "QuickTime"):
        return False
    with open(path, "rb") as handle:
        kinds, _ = _top_level_chunks(handle, path.stat().st_size, big_endian=True)
    return b"moov" in kinds and b"moof" not in kinds


def _ebml_number(handle) -> tuple[int, int] | None:
    """An EBML variable-length number at the handle's position: (value, length in bytes); the
    value is -1 for the reserved "unknown size"."""
    first = handle.read(1)
    if not first or first[0] == 0:
        return None
    length = 9 - first[0].bit_length()
    rest = handle.read(length - 1)
    if len(rest) != length - 1:
        return None
    value = first[0] & ((1 << (8 - length)) - 1)
    for byte in rest:
        value = (value << 8) | byte
    return (-1 if value == (1 << (7 * length)) - 1 else value), length


def _matroska_end(handle) -> int | None:
    """Where a Matroska/WebM file's Segment says it ends (None when its size is unknown, as in
    live-recorded WebM)."""
    handle.seek(4)
    header_size = _ebml_number(handle)
    if header_size is None or header_size[0] < 0:
        return None
    handle.seek(4 + header_size[1] + header_size[0])
    if handle.read(4) != b"\x18\x53\x80\x67":
        return None
    segment_size = _ebml_number(handle)
    if segment_size is None or segment_size[0] < 0:
        return None
    return handle.tell() + segment_size[0]


def _declared_end(path: Path, container: str) -> int | None:
    """The size the file's container says the file has; None when it does not say."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if container in ("MP4/QuickTime", "QuickTime"):
            return _top_level_chunks(handle, size, big_endian=True)[1]
        if container == "AVI":
            return _top_level_chunks(handle, size, big_endian=False)[1]
        if container == "Matroska/WebM":
            return _matroska_end(handle)
    return None


def _check_complete(path: Path, container: str) -> None:
    """Unprocessable when the file ends before its container says it does."""
    declared = _declared_end(path, container)
    size = path.stat().st_size
    if declared is not None and declared > size:
        raise errors.Unprocessable(
            f"the uploaded {container} video is truncated: the file has {size:,} bytes but its contents run to {declared:,} "
            "(was the file cut short while copying or uploading?)", code="damaged_video")


def _check_frame_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise errors.Unprocessable(
            f"the video's frames are {width}x{height} pixels ({width * height:,}), more than the limit of {max_pixels:,} pixels per frame",
            code="frame_too_large")
    if max(width, height) > MAX_JPEG_SIDE:
        raise errors.Unprocessable(
            f"the video's frames are {width}x{height} pixels; frames are stored as JPEG, whose sides cannot exceed {MAX_JPEG_SIDE:,} pixels",
            code="frame_too_large")


def probe(path: Path, max_pixels: int = 50_000_000) -> VideoInfo:
    """The video's container facts; UnsupportedMediaType (415) for a file that is no video,
    Unprocessable (422) for a video that cannot be decoded, is cut short, or whose frames have
    more than `max_pixels` pixels."""
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
        # The stream's header gives the frame size: refuse huge frames before decoding one.
        _check_frame_size(int(_number(capture, cv2.CAP_PROP_FRAME_WIDTH)), int(_number(capture, cv2.CAP_PROP_FRAME_HEIGHT)), max_pixels)
        if container is not None:
            _check_complete(path, container[0])
        ok, frame = capture.read()
        if not ok or frame is None:
            raise errors.Unprocessable("the uploaded video has no frame that can be decoded (empty, truncated or an unsupported codec)", code="no_frames")
        _check_frame_size(int(frame.shape[1]), int(frame.shape[0]), max_pixels)
        name, content_type = container or ("video", "video/mp4")
        return VideoInfo(
            container=name,
            content_type=content_type,
            frame_count=int(frame_count(capture)),
            fps=round(_number(capture, cv2.CAP_PROP_FPS), 3),
            width=int(frame.shape[1]),
            height=int(frame.shape[0]),
        )
    finally:
        capture.release()
