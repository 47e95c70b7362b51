"""Sequential decoding of a video's sampled frames, each encoded once as JPEG.

Decoding is the cheap part only if it is done right: the decoder must see every frame in order
(seeking is slow and inexact), but converting a frame to pixels is what costs. So every frame is
`grab()`bed and only the sampled ones are `retrieve()`d and encoded. Which frames are sampled is
decided by a `FrameSampler`: every N-th frame, or one frame per `interval_ms` of the stream's
own timestamps. The decoder says when the stream ends; the container's frame count is only
a check: where it is exact (an MP4/QuickTime file indexes its samples), a stream that ends well
before it (`Truncated`) means a file cut short or damaged, not a short video.

With `dedupe`, a sampled frame nearly identical to the last frame kept (`image_hash`: its
perceptual hash of a 9x8 thumbnail within the near-duplicate threshold) is skipped before it is
encoded, and counted in `skipped`; a static shot gives one frame, not hundreds.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlstudio.common import image_hash
from mlstudio.common.lazy import lazy_module

from .probe import frame_count, open_capture, records_frame_count

cv2 = lazy_module("cv2")  # OpenCV loads with the first frame, not with the service (see probe.py)


class Undecodable(Exception):
    """The video cannot be opened or decoded; the message is for a person."""


class Truncated(Undecodable):
    """The stream ended well before the frame count its container records."""

    def __init__(self, decoded: int, recorded: int):
        super().__init__(f"the video ends at frame {decoded} of the {recorded} its container records: the file is truncated or damaged")
        self.decoded = decoded
        self.recorded = recorded


def frames_expected_at_least(recorded: int) -> int:
    """The fewest frames a complete video whose container records `recorded` frames decodes to
    (an edit list or an undecodable last frame may drop a few)."""
    return recorded - max(2, recorded // 100)


@dataclass(frozen=True)
class Frame:
    """A sampled frame: its position in the stream and its JPEG bytes."""

    index: int
    timestamp_ms: int
    jpeg: bytes


class FrameSampler:
    """Decides which frames are kept: every `interval`-th frame (0, N, 2N, ...), or with
    `interval_ms`, the first frame at or after each multiple of it on the stream's clock."""

    def __init__(self, interval: int | None = None, interval_ms: int | None = None):
        if bool(interval) == bool(interval_ms) or (interval or interval_ms) <= 0:
            raise ValueError("give exactly one of interval or interval_ms, positive")
        self.interval = interval
        self.interval_ms = interval_ms
        self._next_ms = 0.0

    def wants(self, index: int, timestamp_ms: float) -> bool:
        """Called for every frame, in order."""
        if self.interval:
            return index % self.interval == 0
        if timestamp_ms + 1e-6 < self._next_ms:
            return False
        self._next_ms = (timestamp_ms // self.interval_ms + 1) * self.interval_ms
        return True

    def estimate(self, frame_count: int, duration_ms: int) -> int:
        """How many frames a video of that length will give (for progress only)."""
        if self.interval:
            return -(-frame_count // self.interval) if frame_count > 0 else 0
        return -(-duration_ms // self.interval_ms) if duration_ms > 0 else 0


class FrameDecoder:
    """Decodes `path` once, front to back, yielding the sampled frames after `resume_after`
    (the last frame index already stored by an earlier attempt; -1 for none)."""

    def __init__(self, path: Path, sampler: FrameSampler, *, jpeg_quality: int = 90, resume_after: int = -1,
                 dedupe: bool = False):
        self.path = path
        self.sampler = sampler
        self.jpeg_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
        self.resume_after = resume_after
        self.dedupe = dedupe
        self.decoded = 0
        self.skipped = 0  # sampled frames left out as near-duplicates of the last one kept
        self.fps = 0.0
        self._last_kept: image_hash.PerceptualHash | None = None

    def _timestamp_ms(self, capture, index: int) -> float:
        position = capture.get(cv2.CAP_PROP_POS_MSEC)
        if position > 0 or index == 0:
            return position
        # Some streams carry no timestamps: fall back to the nominal frame rate.
        return index * 1000.0 / self.fps if self.fps > 0 else 0.0

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        capture = open_capture(self.path)
        if not capture.isOpened():
            raise Undecodable("the video cannot be opened: it is damaged or not a video")
        try:
            # Only a count the container stores says how many frames there are (estimates do not).
            recorded = int(frame_count(capture)) if records_frame_count(self.path) else 0
            self.fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
            index = 0
            stopped = False
            while capture.grab():
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                timestamp = self._timestamp_ms(capture, index)
                if self.sampler.wants(index, timestamp) and index > self.resume_after:
                    frame = self._retrieve(capture, index, timestamp)
                    if frame is not None:
                        yield frame
                index += 1
            self.decoded = index
        finally:
            capture.release()
        if index == 0 and not stopped:
            raise Undecodable("the video has no frame that can be decoded")
        if not stopped and recorded > 0 and index < frames_expected_at_least(recorded):
            raise Truncated(index, recorded)

    def _retrieve(self, capture, index: int, timestamp: float) -> Frame | None:
        ok, pixels = capture.retrieve()
        if not ok or pixels is None:
            return None
        if self.dedupe and self._is_repeat(pixels):
            self.skipped += 1
            return None
        ok, encoded = cv2.imencode(".jpg", pixels, self.jpeg_params)
        if not ok:
            raise Undecodable(f"frame {index} could not be encoded as JPEG")
        return Frame(index=index, timestamp_ms=int(round(timestamp)), jpeg=encoded.tobytes())


    def _is_repeat(self, pixels) -> bool:
        """True when `pixels` nearly equal the last kept frame; otherwise they become it."""
        gray = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY) if pixels.ndim == 3 else pixels
        thumbnail = cv2.resize(gray, (image_hash.WIDTH, image_hash.HEIGHT), interpolation=cv2.INTER_AREA)
        found = image_hash.from_thumbnail(thumbnail.tolist())
        if self._last_kept is not None and found.near(self._last_kept):
            return True
        self._last_kept = found
        return False


def batches(frames: Iterator[Frame], max_frames: int, max_bytes: int) -> Iterator[list[Frame]]:
    """Groups frames into batches of at most `max_frames` frames and about `max_bytes` bytes."""
    batch: list[Frame] = []
    size = 0
    for frame in frames:
        if batch and (len(batch) >= max_frames or size + len(frame.jpeg) > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(frame)
        size += len(frame.jpeg)
    if batch:
        yield batch
