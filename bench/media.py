"""The media the benchmarks feed the stack: the shared test video, and what they generate (a
1080p H.264 video, a 500 MB upload, a set of photos-like JPEGs).

Generated files are cached under bench/work/ (git-ignored), named after what they contain, so
only the first run pays for making them. Videos are made with Debian's `ffmpeg` (testsrc2,
libx264); where it is missing, OpenCV's writer makes a stand-in and the results say so.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RAW_FRAME = (640, 360)  # the upload's frames: uncompressed BGR, so its size is exact


@dataclass(frozen=True)
class GeneratedVideo:
    path: Path
    generator: str  # how it was made, for the results


def shared_video(name: str) -> Path:
    """A video of the shared test media (../shared/data beside the checkout)."""
    for root in (REPO_ROOT / "shared" / "data", REPO_ROOT.parent / "shared" / "data"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{name} is missing from the shared test media ({REPO_ROOT.parent / 'shared' / 'data'})")


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=900)


def _made(path: Path, make) -> Path:
    """`path`, made by `make(tmp)` first if it is not cached (written aside, then renamed)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".partial-{path.name}")
        make(tmp)
        tmp.replace(path)
    return path


def sparse_video(
    work_dir: Path, width: int = 1920, height: int = 1080, fps: int = 30, seconds: int = 60
) -> GeneratedVideo:
    """An H.264 video of moving test patterns (ffmpeg testsrc2, libx264)."""
    if shutil.which("ffmpeg"):
        path = work_dir / f"testsrc2-{width}x{height}-{fps}fps-{seconds}s-h264.mp4"
        _made(
            path,
            lambda tmp: _ffmpeg(
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv420p",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                str(tmp),
            ),
        )
        return GeneratedVideo(path, "ffmpeg testsrc2, libx264 (preset veryfast)")
    path = work_dir / f"pattern-{width}x{height}-{fps}fps-{seconds}s-mp4v.mp4"
    _made(
        path,
        lambda tmp: _write_with_opencv(
            tmp, cv2.VideoWriter_fourcc(*"mp4v"), (width, height), fps, fps * seconds, _pattern
        ),
    )
    return GeneratedVideo(path, "cv2.VideoWriter mp4v (MPEG-4 part 2): ffmpeg is not installed, so not H.264")


def upload_video(work_dir: Path, size_bytes: int) -> GeneratedVideo:
    """A valid video of at least `size_bytes`: uncompressed 640x360 frames in an AVI."""
    frames = math.ceil(size_bytes / (RAW_FRAME[0] * RAW_FRAME[1] * 3))
    if shutil.which("ffmpeg"):
        path = work_dir / f"raw-{RAW_FRAME[0]}x{RAW_FRAME[1]}-{frames}frames.avi"
        _made(
            path,
            lambda tmp: _ffmpeg(
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={RAW_FRAME[0]}x{RAW_FRAME[1]}:rate=30",
                "-frames:v",
                str(frames),
                "-c:v",
                "rawvideo",
                "-pix_fmt",
                "bgr24",
                "-f",
                "avi",
                str(tmp),
            ),
        )
        return GeneratedVideo(path, "ffmpeg testsrc2, rawvideo bgr24 in AVI")
    path = work_dir / f"raw-{RAW_FRAME[0]}x{RAW_FRAME[1]}-{frames}frames-opencv.avi"
    _made(path, lambda tmp: _write_with_opencv(tmp, 0, RAW_FRAME, 30, frames, _pattern))
    return GeneratedVideo(path, "cv2.VideoWriter uncompressed AVI: ffmpeg is not installed")


def _pattern(index: int, width: int, height: int) -> np.ndarray:
    """A frame of moving gradients, different in every frame."""
    x = np.arange(width, dtype=np.uint16)[None, :]
    y = np.arange(height, dtype=np.uint16)[:, None]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (x + 4 * index) % 256
    frame[..., 1] = (y + 2 * index) % 256
    frame[..., 2] = ((x + y) // 4 + index) % 256
    return frame


def _write_with_opencv(path: Path, fourcc: int, size: tuple[int, int], fps: int, frames: int, frame_at) -> None:
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path.name} with fourcc {fourcc}")
    try:
        for index in range(frames):
            writer.write(frame_at(index, *size))
    finally:
        writer.release()


def frame_count(path: Path) -> int:
    """Frames as decoded (containers' counts are not to be trusted)."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def photos(count: int, size: int, seed: int = 8) -> tuple[list[bytes], np.ndarray]:
    """`count` JPEGs of `size`x`size` (shapes on gradients, with noise, so they compress like
    photos) and the same images decoded, RGB uint8 [count, size, size, 3]."""
    rng = np.random.default_rng(seed)
    encoded, pixels = [], np.empty((count, size, size, 3), np.uint8)
    y, x = np.mgrid[0:size, 0:size]
    for index in range(count):
        base = rng.integers(0, 256, 3)
        image = ((base[None, None, :] + (x[..., None] * rng.integers(1, 3) + y[..., None]) // 2) % 256).astype(np.uint8)
        for _ in range(3):
            cx, cy, radius = rng.integers(0, size, 2).tolist() + [int(rng.integers(10, size // 3))]
            cv2.circle(image, (cx, cy), radius, rng.integers(0, 256, 3).tolist(), -1)
        noisy = np.clip(image.astype(np.int16) + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        encoded.append(jpeg.tobytes())
        pixels[index] = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return encoded, pixels
