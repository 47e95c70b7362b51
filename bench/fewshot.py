"""A few-shot classification set built from the shared videos (read where they are, never copied).

Each class is a time range of one video (`RANGES`): by default the two halves of
`car-detection.mp4` (`car-1`, `car-2`: the same road, other cars and light) and the whole of
`bottle-detection.mp4` (`bottle`), 3 classes; with one range per video, a class per video. Training frames come evenly from the first 40% of each range, test frames
from its last 40%, so that what is tested was never seen, nor its neighbouring frames. Frames are
JPEG-encoded at the video's size, as a user's uploaded frames would be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Video -> how many time ranges of it are classes.
RANGES = {"car-detection.mp4": 2, "bottle-detection.mp4": 1}
TRAIN_SHARE = 0.4  # training frames from the first 40% of a range, test frames from its last 40%


@dataclass(frozen=True)
class FewShotSet:
    """JPEG bytes per class: `train[tag]` and `test[tag]`."""

    train: dict[str, list[bytes]]
    test: dict[str, list[bytes]]

    @property
    def tags(self) -> list[str]:
        return sorted(self.train)


def shared_data_dir() -> Path:
    for candidate in (REPO_ROOT / "shared" / "data", REPO_ROOT.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the shared test media are missing: expected {REPO_ROOT.parent / 'shared' / 'data'}")


def _spread(start: int, stop: int, count: int) -> list[int]:
    step = (stop - start) / count
    return [start + int(step * index + step / 2) for index in range(count)]


def _frames(path: Path, indexes: set[int]) -> dict[int, bytes]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    found: dict[int, bytes] = {}
    try:
        index = 0
        while len(found) < len(indexes):
            ok, frame = capture.read()
            if not ok:
                break
            if index in indexes:
                found[index] = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            index += 1
    finally:
        capture.release()
    return found


def build(train_per_class: int = 8, test_per_class: int = 10, data_dir: Path | None = None,
          ranges_per_video: dict[str, int] | None = None) -> FewShotSet:
    import cv2

    data_dir = data_dir or shared_data_dir()
    train: dict[str, list[bytes]] = {}
    test: dict[str, list[bytes]] = {}
    for video, ranges in (ranges_per_video or RANGES).items():
        path = data_dir / video
        capture = cv2.VideoCapture(str(path))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        length = total // ranges
        plan = {}
        for part in range(ranges):
            start = part * length
            tag = video.split("-")[0] + (f"-{part + 1}" if ranges > 1 else "")
            share = int(length * TRAIN_SHARE)
            plan[tag] = (_spread(start, start + share, train_per_class),
                         _spread(start + length - share, start + length, test_per_class))
        frames = _frames(path, {index for pair in plan.values() for indexes in pair for index in indexes})
        for tag, (train_indexes, test_indexes) in plan.items():
            train[tag] = [frames[index] for index in train_indexes]
            test[tag] = [frames[index] for index in test_indexes]
    return FewShotSet(train, test)


def write(images: dict[str, list[bytes]], folder: Path) -> Path:
    """The images in the layout a training reads: `folder/<tag>/<n>.jpg`."""
    for tag, contents in images.items():
        (folder / tag).mkdir(parents=True, exist_ok=True)
        for index, content in enumerate(contents):
            (folder / tag / f"{index + 1}.jpg").write_bytes(content)
    return folder
