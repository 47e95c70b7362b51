"""Pieces of inference: preprocessing, decoding and batching images, reading model outputs."""
import io

import numpy as np
import pytest
from PIL import Image

from mlstudio.common import errors
from model_service import detections, pixels, preprocessing


def encoded(picture: Image.Image, fmt="PNG", **options) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize("mode, expected", [("raw", [0, 127.5, 255]), ("unit", [0, 0.5, 1]), ("symmetric", [-1, 0, 1])])
def test_preprocessing_modes(mode, expected):
    assert preprocessing.apply(np.array([0, 127.5, 255]), mode) == pytest.approx(expected)


def test_preprocessing_names():
    assert preprocessing.mode(None) == "raw" and preprocessing.mode(" Unit ") == "unit"
    with pytest.raises(errors.InvalidArgument):
        preprocessing.mode("caffe")


def test_batch_resizes_to_the_model_input_and_keeps_original_sizes():
    red = encoded(Image.new("RGB", (64, 48), (255, 0, 0)))
    grey = encoded(Image.new("L", (10, 20), 100))
    rgba = encoded(Image.new("RGBA", (8, 8), (0, 0, 255, 128)))
    batch = pixels.to_batch([red, grey, rgba], 16, 32)
    assert batch.pixels.shape == (3, 16, 32, 3) and batch.pixels.dtype == np.uint8
    assert batch.sizes == [(64, 48), (10, 20), (8, 8)]
    assert (batch.pixels[0] == [255, 0, 0]).all() and (batch.pixels[1] == 100).all()
    assert (batch.pixels[2] == [0, 0, 255]).all()


def test_exif_orientation_is_applied():
    picture = Image.new("RGB", (40, 20), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    batch = pixels.to_batch([encoded(picture, "JPEG", exif=exif)], 8, 8)
    assert batch.sizes == [(20, 40)]


def test_undecodable_images_are_refused():
    with pytest.raises(errors.Unprocessable, match="image 1"):
        pixels.to_batch([b"\x89PNG broken"], 8, 8)
    with pytest.raises(errors.InvalidArgument):
        pixels.to_batch([], 8, 8)


def test_chunks_cut_batches():
    assert pixels.chunks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert pixels.chunks(3, 64) == [slice(0, 3)]


def test_classify_takes_the_best_label():
    results = detections.classify(np.array([[0.2, 0.8], [0.9, 0.1]]), ["light", "dark"])
    assert [(r.label, round(r.score, 2)) for r in results] == [("dark", 0.8), ("light", 0.9)]


def detection_outputs():
    return {
        "detection_boxes": np.array([[[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.25], [-0.1, 0.2, 1.2, 0.4], [0, 0, 1, 1]]], np.float32),
        "detection_scores": np.array([[0.6, 0.9, 0.7, 0.95]], np.float32),
        "detection_classes": np.array([[1, 2, 7, 1]], np.float32),
        "num_detections": np.array([3], np.float32),
    }


def test_boxes_map_to_original_pixels_best_first_above_threshold():
    found = detections.boxes_in_pixels(detection_outputs(), [(400, 200)], ["cat", "dog"], 0.65)[0]
    assert [(d.label, round(d.score, 2)) for d in found] == [("dog", 0.9), ("class 7", 0.7)]
    assert (found[0].x1, found[0].y1, found[0].x2, found[0].y2) == pytest.approx((0, 0, 100, 100))
    # Boxes outside [0, 1] are clipped to the image.
    assert (found[1].x1, found[1].y1, found[1].x2, found[1].y2) == pytest.approx((80, 0, 160, 200))


def test_num_detections_limits_the_boxes_read():
    found = detections.boxes_in_pixels(detection_outputs(), [(10, 10)], ["cat", "dog"], 0.5)[0]
    assert 0.95 not in [round(d.score, 2) for d in found] and len(found) == 3


def test_class_ids_are_one_based():
    assert detections.class_label(1.0, ["cat", "dog"]) == "cat"
    assert detections.class_label(2.0, ["cat", "dog"]) == "dog"
    assert detections.class_label(0.0, ["cat", "dog"]) == "class 0"


def test_large_jpegs_keep_their_full_size_for_boxes():
    photo = Image.new("RGB", (1600, 1200), (200, 30, 30))
    batch = pixels.to_batch([encoded(photo, "JPEG", quality=95)], 32, 32)
    assert batch.sizes == [(1600, 1200)]
    assert np.abs(batch.pixels[0].astype(int) - [200, 30, 30]).max() <= 3
