"""The frame pipeline: decode sampled frames, label them in batches, store them in batches.

Three threads keep both cores busy: a decoding thread fills a small bounded queue with batches of
JPEG frames; the calling thread sends each batch to the model service (one `Classify` or
`Detect` call per batch) and hands the labelled batch to a storing thread, which sends it to the
image service (one `CreateImages` call per batch) and saves progress, while the next batch is
being labelled. Both queues are bounded, which keeps memory flat whatever the video's length:
decoding waits when labelling falls behind, labelling when storing does. Batches are stored,
and progress saved, in frame order.

With `dedupe`, the decoder leaves out sampled frames nearly identical to the last one kept
(see `frames`); progress counts them (`skipped`) and the total estimate drops by them.

After each stored batch, progress and a checkpoint (the last stored frame index) are saved, so an
attempt that dies part-way is resumed by the next one from there; a batch stored twice (after a
crash between storing and checkpointing) creates nothing twice, because `CreateImages` is
idempotent on (video id, frame index).

Frames go to the image service with what the model said, as it said it: a Classification frame
with the predicted label as its tag, a Detection frame with every box and no tag. Which tag that
makes (lower-cased, made valid; for Detection frames `detected`, or the most confident box's
label where the image service is set so) is the image service's rule, applied by `CreateImages`
as for its own predictions. So is whether a frame's label is checked (`isTrain`): the frames
leave `NewImage.is_train` unset, which says the label is the model's, and the image service
checks those scoring at least the project's review threshold; the others wait for review.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlstudio.common import errors
from mlstudio.common.vocabulary import DETECTION
from mlstudio.image.v1 import image_pb2

from .frames import Frame, FrameDecoder, FrameSampler, batches


class Labeller(Protocol):
    """The model service's inference calls (`clients.ModelClient`)."""

    def classify(self, model_id: int, user_id: int, images: list[bytes]) -> list: ...

    def detect(self, model_id: int, user_id: int, images: list[bytes], threshold: float = 0.0) -> list: ...


class FrameStore(Protocol):
    """The image service's frame storage (`clients.ImageClient`)."""

    def create_images(self, project_id: int, user_id: int, images: list[image_pb2.NewImage]) -> list: ...


class FramesRefused(Exception):
    """The model service could not label the frames, or the image service would not store them,
    for a reason that retrying will not fix; the message says which, for a person."""


@dataclass(frozen=True)
class SplitRequest:
    """What to do with one video."""

    video_id: int
    project_id: int
    user_id: int
    model_id: int
    project_type: str
    title: str
    interval: int | None
    interval_ms: int | None
    frame_count_estimate: int = 0
    duration_ms_estimate: int = 0
    dedupe: bool = False  # skip sampled frames nearly identical to the last one kept
    threshold: float = 0.0  # Detection: the score a detection needs; 0, the model's default


@dataclass(frozen=True)
class Resume:
    """Where an earlier attempt stopped: frames after `after_frame` are still to do."""

    after_frame: int = -1
    done: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class SplitSummary:
    frames_decoded: int
    images: int
    fps: float
    skipped: int = 0  # sampled frames left out as near-duplicates (`dedupe`)


ProgressCallback = Callable[[int, int, int, int], None]
"""report(done, total, last_frame_index, skipped): saves progress (`skipped`: near-duplicate
frames left out so far); raises when the work must stop."""


class _DecodingFailed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class FramePipeline:
    def __init__(self, labeller: Labeller, frame_store: FrameStore, *, batch_size: int = 32, batch_bytes: int = 16 << 20,
                 jpeg_quality: int = 90, queue_depth: int = 2):
        self.labeller = labeller
        self.frame_store = frame_store
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.jpeg_quality = jpeg_quality
        self.queue_depth = queue_depth

    def run(self, request: SplitRequest, path: Path, report: ProgressCallback, resume: Resume = Resume()) -> SplitSummary:
        """Splits the video at `path`; returns what was decoded and stored."""
        sampler = FrameSampler(request.interval, request.interval_ms)
        estimate = sampler.estimate(request.frame_count_estimate, request.duration_ms_estimate)
        decoder = FrameDecoder(path, sampler, jpeg_quality=self.jpeg_quality, resume_after=resume.after_frame,
                               dedupe=request.dedupe)

        def skipped() -> int:
            return resume.skipped + decoder.skipped

        state = {"done": resume.done, "last_index": resume.after_frame}

        def store(batch: list[Frame], results: list) -> None:
            self._store(request, batch, results)
            state["done"] += len(batch)
            state["last_index"] = batch[-1].index
            # Skipped frames leave the estimate: the total falls as duplicates are found.
            report(state["done"], max(estimate - skipped(), state["done"]), state["last_index"], skipped())

        with _DecodingThread(decoder, self.batch_size, self.batch_bytes, self.queue_depth) as decoding, \
                _StoringThread(store) as storing:
            for batch in decoding.batches():
                results = self._label(request, batch)
                storing.put(batch, results)
            storing.finish()
        done, last_index = state["done"], state["last_index"]
        report(done, done, last_index, skipped())
        return SplitSummary(frames_decoded=decoder.decoded, images=done, fps=decoder.fps, skipped=skipped())

    def _label(self, request: SplitRequest, batch: Sequence[Frame]) -> list:
        images = [frame.jpeg for frame in batch]
        try:
            if request.project_type == DETECTION:
                results = self.labeller.detect(request.model_id, request.user_id, images, request.threshold)
            else:
                results = self.labeller.classify(request.model_id, request.user_id, images)
        except errors.Unavailable:
            raise
        except errors.NotFound as exc:
            raise FramesRefused(f"model {request.model_id} cannot label the frames any more: {exc.message} (was it deleted?)") from None
        except errors.DomainError as exc:
            raise FramesRefused(f"model {request.model_id} could not label the frames: {exc.message}") from None
        if len(results) != len(batch):
            raise FramesRefused(f"model {request.model_id} answered {len(results)} results for {len(batch)} frames")
        return results

    def _store(self, request: SplitRequest, batch: Sequence[Frame], results: Sequence) -> None:
        if request.project_type == DETECTION:
            images = [detection_frame(request, frame, result) for frame, result in zip(batch, results)]
        else:
            images = [classified_frame(request, frame, result) for frame, result in zip(batch, results)]
        try:
            self.frame_store.create_images(request.project_id, request.user_id, images)
        except errors.Unavailable:
            raise
        except errors.DomainError as exc:
            raise FramesRefused(f"the frames could not be stored: {exc.message}") from None


def _new_image(request: SplitRequest, frame: Frame, **labels) -> image_pb2.NewImage:
    return image_pb2.NewImage(
        content=frame.jpeg,
        content_type="image/jpeg",
        title=f"{request.title} frame {frame.index}"[:200],
        video_id=request.video_id,
        frame_index=frame.index,
        timestamp_ms=frame.timestamp_ms,
        **labels,
    )


def classified_frame(request: SplitRequest, frame: Frame, result) -> image_pb2.NewImage:
    """A frame with the label its model predicted and the model's confidence (the image service
    makes the label a tag)."""
    return _new_image(request, frame, tag=result.label, score=result.score)


def detection_frame(request: SplitRequest, frame: Frame, result) -> image_pb2.NewImage:
    """A frame with every object found in it and no tag: the image service files it (see its
    `detections.filed_under`), with its most confident object's score."""
    detections = [image_pb2.Detection(label=b.label, score=b.score, x1=b.x1, y1=b.y1, x2=b.x2, y2=b.y2) for b in result.boxes]
    return _new_image(request, frame, detections=detections)


class _StoringThread:
    """Stores labelled batches (and saves progress after each) in its own thread, in the order
    they were put, while the caller labels the next batch. The queue holds one batch: labelling
    runs at most one batch ahead of storing, so memory stays flat. The first error stops storing
    (nothing after the failed batch is stored) and is raised to the caller at its next `put` or
    at `finish`."""

    def __init__(self, store: Callable[[list[Frame], list], None]):
        self.store = store
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.failed: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._consume, name="frame-store", daemon=True)

    def _consume(self) -> None:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            try:
                self.store(*item)
            except BaseException as exc:  # noqa: BLE001 - raised in the labelling thread by `_raise_failure`
                self.failed = exc
                self.stop.set()
                return

    def _raise_failure(self) -> None:
        if self.failed is not None:
            raise self.failed

    def put(self, batch: list[Frame], results: list) -> None:
        """Hands a labelled batch over; waits while the previous one is still being stored."""
        while True:
            self._raise_failure()
            try:
                self.queue.put((batch, results), timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Waits until every batch put is stored; raises the storing error, if any."""
        self._close()
        self._raise_failure()

    def _close(self) -> None:
        if self.thread.is_alive():
            while not self.stop.is_set():
                try:
                    self.queue.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self.thread.join()

    def __enter__(self) -> _StoringThread:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        # On an error in the labelling thread, the batches already handed over are still
        # stored (they were labelled), then the thread ends.
        self._close()


class _DecodingThread:
    """Runs the decoder in its own thread, handing batches of frames over a bounded queue."""

    def __init__(self, decoder: FrameDecoder, batch_size: int, batch_bytes: int, depth: int):
        self.decoder = decoder
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="frame-decoder", daemon=True)

    def _put(self, item) -> bool:
        """Blocks while the queue is full; gives up (False) once the consumer has gone."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        frames = self.decoder.frames(self.stop)
        try:
            for batch in batches(frames, self.batch_size, self.batch_bytes):
                if not self._put(batch):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, which raises it
            self._put(_DecodingFailed(exc))
            return
        finally:
            frames.close()
        self._put(_END)

    def batches(self) -> Iterator[list[Frame]]:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if isinstance(item, _DecodingFailed):
                raise item.error
            yield item

    def __enter__(self) -> _DecodingThread:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join()
