"""Sampling and decoding: which frames come out, with which indexes and timestamps, and the probe
that refuses what is not a decodable video."""
import threading

import cv2
import numpy as np
import pytest
from video_fakes import brightness_label, write_light_dark_video

from mlstudio.common import errors
from video_service.frames import Frame, FrameDecoder, FrameSampler, Undecodable, batches
from video_service.probe import probe


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


def test_a_truncated_avi_gives_the_frames_before_the_cut(tmp_path):
    full = write_light_dark_video(tmp_path / "full.avi", fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert probe(cut).container == "AVI"
    decoder = FrameDecoder(cut, FrameSampler(interval=1))
    assert 0 < len(list(decoder.frames())) < 200
