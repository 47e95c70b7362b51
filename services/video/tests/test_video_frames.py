"""Sampling and decoding: which frames come out, with which indexes and timestamps, and the probe
that refuses what is not a decodable video."""
import threading

import cv2
import numpy as np
import pytest
from conftest import shared_data_dir
from video_fakes import brightness_label, write_light_dark_video

from mlstudio.common import errors
from video_service.frames import Frame, FrameDecoder, FrameSampler, Truncated, Undecodable, batches
from video_service.probe import probe, records_frame_count


def test_every_tenth_frame_of_the_light_dark_video(light_dark_video):
    decoder = FrameDecoder(light_dark_video, FrameSampler(interval=10))
    frames = list(decoder.frames())
    assert [frame.index for frame in frames] == list(range(0, 200, 10))
    assert [brightness_label(frame.jpeg)[0] for frame in frames] == ["light"] * 10 + ["dark"] * 10
    assert [frame.timestamp_ms for frame in frames[:3]] == [0, 400, 800]  # 25 fps
    assert decoder.decoded == 200


def test_each_sampled_frame_is_a_jpeg_of_the_video_size(light_dark_video):
    frame = next(FrameDecoder(light_dark_video, FrameSampler(interval=50)).frames())
    pixels = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert frame.jpeg[:3] == b"\xff\xd8\xff" and pixels.shape == (48, 64, 3)


def test_sampling_by_time_uses_the_stream_timestamps(light_dark_video):
    frames = list(FrameDecoder(light_dark_video, FrameSampler(interval_ms=1000)).frames())  # 25 fps, 8 s
    assert [frame.index for frame in frames] == [0, 25, 50, 75, 100, 125, 150, 175]
    assert [frame.timestamp_ms for frame in frames] == [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000]


def test_sampling_by_time_finer_than_the_frame_rate_takes_every_frame(light_dark_video):
    assert len(list(FrameDecoder(light_dark_video, FrameSampler(interval_ms=10)).frames())) == 200


def test_resuming_skips_the_frames_already_stored(light_dark_video):
    frames = list(FrameDecoder(light_dark_video, FrameSampler(interval=10), resume_after=120).frames())
    assert [frame.index for frame in frames] == list(range(130, 200, 10))


def test_a_stop_request_ends_decoding_early(light_dark_video):
    stop = threading.Event()
    decoder = FrameDecoder(light_dark_video, FrameSampler(interval=1))
    seen = []
    for frame in decoder.frames(stop):
        seen.append(frame.index)
        if frame.index == 4:
            stop.set()
    assert seen == [0, 1, 2, 3, 4]


def test_the_real_bottle_video_decodes_all_its_frames(bottle_video):
    decoder = FrameDecoder(bottle_video, FrameSampler(interval=10))
    frames = list(decoder.frames())
    assert decoder.decoded == 1189
    assert len(frames) == 119 and frames[-1].index == 1180


def test_decoding_something_that_is_no_video_fails_clearly(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_bytes(b"just text\n" * 100)
    with pytest.raises(Undecodable, match="cannot be opened"):
        list(FrameDecoder(path, FrameSampler(interval=1)).frames())


def test_sampler_refuses_nonsense():
    for kwargs in ({}, {"interval": 0}, {"interval_ms": -5}, {"interval": 2, "interval_ms": 5}):
        with pytest.raises(ValueError):
            FrameSampler(**kwargs)


def test_estimates_round_up():
    assert FrameSampler(interval=10).estimate(1189, 0) == 119
    assert FrameSampler(interval_ms=1000).estimate(0, 8000) == 8
    assert FrameSampler(interval=10).estimate(0, 0) == 0


def test_batches_respect_count_and_bytes():
    frames = [Frame(i, i, b"x" * 10) for i in range(7)]
    assert [len(b) for b in batches(iter(frames), 3, 1000)] == [3, 3, 1]
    assert [len(b) for b in batches(iter(frames), 100, 25)] == [2, 2, 2, 1]
    assert [len(b) for b in batches(iter([Frame(0, 0, b"x" * 50)]), 3, 25)] == [1]  # a big frame still goes


# ---- probe ------------------------------------------------------------------------------------

def test_probe_reads_the_container_facts(light_dark_video):
    info = probe(light_dark_video)
    assert (info.container, info.content_type, info.frame_count, info.fps, info.width, info.height) == ("MP4/QuickTime", "video/mp4", 200, 25.0, 64, 48)


def test_probe_refuses_a_text_file_as_not_a_video(tmp_path):
    path = tmp_path / "upload"
    path.write_bytes(b"hello, this is not a video\n" * 50)
    with pytest.raises(errors.UnsupportedMediaType, match="not a video"):
        probe(path)


def test_probe_refuses_a_picture_as_not_a_video(tmp_path):
    path = tmp_path / "upload"
    path.write_bytes(cv2.imencode(".jpg", np.zeros((20, 20, 3), np.uint8))[1].tobytes())
    with pytest.raises(errors.UnsupportedMediaType, match="JPEG image"):
        probe(path)


def test_probe_calls_a_truncated_mp4_damaged(tmp_path, light_dark_video):
    path = tmp_path / "upload"
    data = light_dark_video.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.Unprocessable, match="damaged or truncated"):
        probe(path)


def test_probe_calls_a_video_without_frames_damaged(tmp_path):
    path = tmp_path / "zero.mp4"
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48)).release()
    with pytest.raises(errors.Unprocessable):
        probe(path)


def test_probe_refuses_an_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with pytest.raises(errors.Unprocessable, match="empty"):
        probe(path)


def truncated_copy(source, tmp_path, keep: int, suffix=".mp4"):
    """The first `keep` bytes of `source` (an interrupted copy or upload), in a temporary file."""
    cut = tmp_path / f"cut{suffix}"
    with open(source, "rb") as handle:
        cut.write_bytes(handle.read(keep))
    return cut


def test_the_first_100_kb_of_a_real_mp4_are_refused_as_truncated(tmp_path):
    # car-detection.mp4 records its index first, so its first 100 kB open and decode 12 frames.
    cut = truncated_copy(shared_data_dir() / "car-detection.mp4", tmp_path, 100_000)
    with pytest.raises(errors.Unprocessable, match="truncated: the file has 100,000 bytes but its contents run to 2,811,553") as refused:
        probe(cut)
    assert refused.value.code == "damaged_video"


@pytest.mark.parametrize("suffix, fourcc", [(".avi", "MJPG"), (".mkv", "mp4v"), (".mp4", "mp4v")])
def test_a_video_cut_short_is_refused_whatever_its_container(tmp_path, suffix, fourcc):
    full = write_light_dark_video(tmp_path / f"full{suffix}", fourcc=fourcc)
    assert probe(full).frame_count == 200
    with pytest.raises(errors.Unprocessable, match="truncated|cannot be opened"):
        probe(truncated_copy(full, tmp_path, full.stat().st_size // 2, suffix))


def test_padding_after_the_last_box_is_no_truncation(tmp_path, light_dark_video):
    padded = tmp_path / "padded.mp4"
    padded.write_bytes(light_dark_video.read_bytes() + b"\0" * 100)
    assert probe(padded).frame_count == 200


def test_a_truncated_avi_gives_the_frames_before_the_cut(tmp_path):
    full = write_light_dark_video(tmp_path / "full.avi", fourcc="MJPG")
    cut = truncated_copy(full, tmp_path, full.stat().st_size // 2, ".avi")
    decoder = FrameDecoder(cut, FrameSampler(interval=1))
    assert 0 < len(list(decoder.frames())) < 200  # AVI records no exact count: the decoder cannot tell


def test_an_mp4_that_ends_before_its_recorded_frame_count_is_called_truncated(tmp_path):
    # As the worker meets a file the probe did not refuse (the same cut, with no upload check).
    decoder = FrameDecoder(truncated_copy(shared_data_dir() / "car-detection.mp4", tmp_path, 100_000), FrameSampler(interval=1))
    frames = []
    with pytest.raises(Truncated, match="the video ends at frame 12 of the 377 its container records: the file is truncated or damaged"):
        frames.extend(decoder.frames())
    assert len(frames) == 12  # what was decoded came out before the check


def test_only_an_mp4_that_indexes_its_samples_is_held_to_its_frame_count(tmp_path, light_dark_video):
    assert records_frame_count(light_dark_video)
    fragmented = tmp_path / "fragmented.mp4"  # a `moof` box: samples listed fragment by fragment
    fragmented.write_bytes(light_dark_video.read_bytes() + (16).to_bytes(4, "big") + b"moof" + bytes(8))
    assert not records_frame_count(fragmented)
    assert not records_frame_count(write_light_dark_video(tmp_path / "estimated.mkv"))  # a count from duration x rate


def test_frames_over_the_pixel_limit_are_refused_before_one_is_decoded(tmp_path, light_dark_video):
    with pytest.raises(errors.Unprocessable, match="frames are 64x48 pixels \\(3,072\\), more than the limit of 3,000 pixels per frame") as refused:
        probe(light_dark_video, max_pixels=3000)
    assert refused.value.code == "frame_too_large"
    assert probe(light_dark_video, max_pixels=64 * 48).width == 64


def test_a_real_video_of_huge_frames_is_refused_at_the_default_limit(tmp_path):
    path = tmp_path / "huge.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 1, (10_000, 5_200))
    writer.write(np.zeros((5_200, 10_000, 3), np.uint8))
    writer.release()
    with pytest.raises(errors.Unprocessable, match="frames are 10000x5200 pixels \\(52,000,000\\), more than the limit of 50,000,000"):
        probe(path)


def test_dedupe_keeps_one_frame_per_static_shot(light_dark_video):
    decoder = FrameDecoder(light_dark_video, FrameSampler(interval=1), dedupe=True)
    frames = list(decoder.frames())
    assert [frame.index for frame in frames] == [0, 100]  # the light shot, then the dark one
    assert [brightness_label(frame.jpeg)[0] for frame in frames] == ["light", "dark"]
    assert decoder.skipped == 198 and decoder.decoded == 200


def test_dedupe_keeps_frames_that_change(tmp_path):
    path = tmp_path / "moving.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for index in range(20):
        picture = np.zeros((48, 64, 3), np.uint8)
        left = 4 if index % 2 == 0 else 40  # a square that jumps from side to side: every frame differs
        cv2.rectangle(picture, (left, 10), (left + 16, 30), (255, 255, 255), -1)
        writer.write(picture)
    writer.release()
    decoder = FrameDecoder(path, FrameSampler(interval=1), dedupe=True)
    assert len(list(decoder.frames())) == 20 and decoder.skipped == 0
