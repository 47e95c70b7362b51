"""A few-shot classification set built from the shared videos (read where they are, never copied).

Each class is a time range of one video whose content differs from every other class's
(`SCENES`, chosen by looking at the frames): on `bottle-detection.mp4` three bottles, two
bottles (the left one taken away) and one bottle; on `car-detection.mp4` the empty road, a white
car turning, and a grey car beside a red one. Training frames come evenly from the first half of
each range, test frames from its last 40%, so that what is tested was never seen, nor its
neighbouring frames (the cars have moved on, the hand has come and gone). Frames are
JPEG-encoded at the video's size, as a user's uploaded frames would be.

`build(ranges_per_video=...)` gives the older, coarser kind of set instead: a video cut into equal
ranges, a class per range (one range per video: a class per video).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SHARE = 0.5  # training frames from the first half of a scene
TEST_SHARE = 0.4  # test frames from its last 40% (a tenth of the scene between them)
RANGES_TRAIN_SHARE = 0.4  # the coarser set's: a long range's first 40%, then its last 40%


@dataclass(frozen=True)
class Scene:
    """A class of the set: frames `first` (included) to `stop` (excluded) of `video`."""

    tag: str
    video: str
    first: int
    stop: int


# Frame numbers as decoded (bottle-detection.mp4: 1189 frames at 29.8 fps; car-detection.mp4:
# 377 at 12.5 fps). Each range is free of the hand moving bottles, and its cars are whole in every
# frame (a car half out of the picture is neither `empty-road` nor `white-car`).
SCENES = (
    Scene("three-bottles", "bottle-detection.mp4", 0, 175),
    Scene("two-bottles", "bottle-detection.mp4", 220, 330),
    Scene("one-bottle", "bottle-detection.mp4", 540, 650),
    Scene("empty-road", "car-detection.mp4", 0, 56),
    Scene("white-car", "car-detection.mp4", 64, 97),
    Scene("two-cars", "car-detection.mp4", 194, 222),
)
# The coarser set: video -> how many equal time ranges of it are classes.
RANGES = {"car-detection.mp4": 2, "bottle-detection.mp4": 1}


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


def _frame_count(path: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def equal_ranges(ranges_per_video: dict[str, int], data_dir: Path) -> list[Scene]:
    """Each video cut into equal time ranges; the tag is the video's first word (and the range's number)."""
    scenes = []
    for video, ranges in ranges_per_video.items():
        length = _frame_count(data_dir / video) // ranges
        for part in range(ranges):
            tag = video.split("-")[0] + (f"-{part + 1}" if ranges > 1 else "")
            scenes.append(Scene(tag, video, part * length, (part + 1) * length))
    return scenes


def build(train_per_class: int = 7, test_per_class: int = 8, data_dir: Path | None = None,
          ranges_per_video: dict[str, int] | None = None, scenes: tuple[Scene, ...] | list[Scene] = SCENES,
          test_share: float = TEST_SHARE) -> FewShotSet:
    """`train_per_class` frames from the start of each scene and `test_per_class` from its end
    (`ranges_per_video`, when given, replaces `scenes` with equal ranges of each video)."""
    data_dir = data_dir or shared_data_dir()
    train_share = TRAIN_SHARE
    if ranges_per_video is not None:
        scenes, train_share = equal_ranges(ranges_per_video, data_dir), RANGES_TRAIN_SHARE
    plan: dict[str, dict[str, tuple[list[int], list[int]]]] = {}
    for scene in scenes:
        length = scene.stop - scene.first
        train_stop = scene.first + int(length * train_share)
        test_first = scene.stop - int(length * test_share)
        plan.setdefault(scene.video, {})[scene.tag] = (_spread(scene.first, train_stop, train_per_class),
                                                      _spread(test_first, scene.stop, test_per_class))
    train: dict[str, list[bytes]] = {}
    test: dict[str, list[bytes]] = {}
    for video, tags in plan.items():
        frames = _frames(data_dir / video, {index for pair in tags.values() for indexes in pair for index in indexes})
        for tag, (train_indexes, test_indexes) in tags.items():
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
