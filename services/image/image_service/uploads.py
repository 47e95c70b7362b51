"""Checks uploaded image files before anything is stored.

Every file of a request is checked first (count, size, pixel count, a full decode with Pillow
restricted to JPEG, PNG, WebP and BMP), so a request with one bad file stores nothing, and the
error names the file. The checked file keeps its stream (Werkzeug spools large uploads to disk),
so storing it later streams from there instead of holding every upload in memory.

Frames that the video worker (an internal peer over gRPC) sends are checked more cheaply
(`check_frame`): the same limits, formats and errors, but a JPEG is decoded at 1/8 scale in
grayscale (libjpeg's DCT scaling), which still reads every byte of the file, so a truncated or
corrupt frame is refused, yet skips most of a full decode's work; the perceptual hash is taken
from that small picture. Every other format, and every user upload, gets the full decode.
"""
from __future__ import annotations

import hashlib
import io
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from mlstudio.common import errors, image_hash
from PIL import Image, UnidentifiedImageError

CHUNK = 1024 * 1024
MAX_TITLE = 200
# Pillow format -> (Content-Type, file extension of the stored object).
FORMATS = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "BMP": ("image/bmp", "bmp"),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class UploadedFile:
    """One file as a client sent it: its name (shown, never used as a path) and its bytes."""

    name: str
    stream: BinaryIO


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_files: int
    max_pixels: int


@dataclass
class CheckedImage:
    """A file that decoded as an accepted image; `stream` holds its bytes."""

    title: str
    stream: BinaryIO
    size: int
    sha256: str
    content_type: str
    extension: str
    width: int
    height: int
    phash: str = ""  # perceptual hash (`image_hash`), encoded

    def read(self) -> bytes:
        self.stream.seek(0)
        return self.stream.read()


def title_of(name: str | None) -> str:
    """A display title from a client's file name: its last path part, without control characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    return _CONTROL.sub("", base).strip()[:MAX_TITLE] or "image"


def check_all(files: list[UploadedFile], limits: UploadLimits) -> list[CheckedImage]:
    """Every file checked, in order; the first bad one raises a 4xx error that names it."""
    if not files:
        raise errors.InvalidArgument("no files: send one or more images in the multipart field 'files'", code="no_files")
    if len(files) > limits.max_files:
        raise errors.PayloadTooLarge(f"{len(files)} files sent; at most {limits.max_files} per request", code="too_many_files")
    return [check_one(upload, position, limits) for position, upload in enumerate(files, 1)]


def check_bytes(content: bytes, title: str, limits: UploadLimits, position: int = 1) -> CheckedImage:
    """The same checks for bytes received over gRPC."""
    return check_one(UploadedFile(title, io.BytesIO(content)), position, limits)


def check_frame(content: bytes, title: str, limits: UploadLimits, position: int = 1) -> CheckedImage:
    """`check_bytes` for a frame from the video worker: a JPEG decoded at 1/8 scale (see above)."""
    return check_one(UploadedFile(title, io.BytesIO(content)), position, limits, reduced=True)


def check_one(upload: UploadedFile, position: int, limits: UploadLimits, *, reduced: bool = False) -> CheckedImage:
    title = title_of(upload.name)
    label = f"file {position} ({title!r})"
    stream = _seekable(upload.stream, limits.max_bytes)
    size = stream.seek(0, io.SEEK_END)
    if size == 0:
        raise errors.InvalidArgument(f"{label} is empty", code="empty_file")
    if size > limits.max_bytes:
        raise errors.PayloadTooLarge(f"{label} is larger than the limit of {limits.max_bytes} bytes", code="file_too_large")
    digest = _sha256(stream)
    image_format, width, height, phash = _decode(stream, label, limits.max_pixels, reduced=reduced)
    content_type, extension = FORMATS[image_format]
    return CheckedImage(title, stream, size, digest, content_type, extension, width, height, phash)


def _seekable(stream: BinaryIO, max_bytes: int) -> BinaryIO:
    """`stream` itself when it can seek, else a spooled copy of at most `max_bytes` + 1 bytes
    (enough to tell that it is too large)."""
    try:
        if stream.seekable():
            return stream
    except (AttributeError, ValueError):
        pass
    copy = tempfile.SpooledTemporaryFile(max_size=CHUNK)
    shutil.copyfileobj(io.BufferedReader(_Limited(stream, max_bytes + 1)), copy, CHUNK)
    return copy


class _Limited(io.RawIOBase):
    """Reads at most `limit` bytes of `stream`."""

    def __init__(self, stream: BinaryIO, limit: int):
        self.stream, self.left = stream, limit

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.stream.read(min(len(buffer), self.left)) if self.left > 0 else b""
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)


def _sha256(stream: BinaryIO) -> str:
    stream.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def perceptual_hash(image: Image.Image) -> str:
    """The encoded `image_hash` of a decoded picture (a 9x8 grayscale thumbnail's)."""
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGB")
    thumbnail = image.resize((image_hash.WIDTH, image_hash.HEIGHT), Image.Resampling.BOX, reducing_gap=2.0).convert("L")
    pixels = list(thumbnail.getdata())
    rows = [pixels[row * image_hash.WIDTH:(row + 1) * image_hash.WIDTH] for row in range(image_hash.HEIGHT)]
    return image_hash.from_thumbnail(rows).encode()


def _decode(stream: BinaryIO, label: str, max_pixels: int, *, reduced: bool = False) -> tuple[str, int, int, str]:
    """(Pillow format, width, height, perceptual hash) after a full decode, which catches
    truncated files. Only the accepted formats' parsers ever see the bytes. With `reduced`, a
    JPEG is decoded at 1/8 scale in grayscale: every byte is still read (truncation is still
    caught), the full-size pixels are never made."""
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream, formats=list(FORMATS)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise errors.PayloadTooLarge(f"{label} has {width}x{height} pixels, more than the limit of {max_pixels}",
                                                 code="too_many_pixels")
                if reduced and image.format == "JPEG":
                    # The smallest scale libjpeg offers that still covers the hash's thumbnail.
                    image.draft("L", (max(image_hash.WIDTH, width // 8), max(image_hash.HEIGHT, height // 8)))
                image.load()
                return image.format, width, height, perceptual_hash(image)
    except UnidentifiedImageError:
        raise errors.UnsupportedMediaType(f"{label} is not a JPEG, PNG, WebP or BMP image", code="not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise errors.PayloadTooLarge(f"{label} has more pixels than the limit of {max_pixels}", code="too_many_pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise errors.Unprocessable(f"{label} cannot be decoded: {exc}", code="undecodable_image") from None
