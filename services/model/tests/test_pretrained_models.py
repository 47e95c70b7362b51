"""The built-in pretrained models as the studio serves them, on real video frames.

The TF.js reader is checked on a small graph written here with TF.js's traps (float16-quantized
weights, an int64 constant stored as int32, a fused convolution). The other tests use the
models that the setup step (`make pretrained`, run by `make test`) converted into the cache;
without it they fail and say so, rather than skip. The frames are from `shared/data` and were
looked at with the boxes drawn: frame 345 of car-detection.mp4 has a white car entering at the
bottom left (seen from above), frame 50 of bottle-detection.mp4 three water bottles standing in
a row, the middle one at x 287-342.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_service import detections, exporter
from model_service.pretrained import catalog, tfjs_graph

ROOT = Path(__file__).resolve().parents[3]


def _shared_video(name: str) -> Path:
    for candidate in (ROOT / "shared" / "data", ROOT.parent / "shared" / "data"):
        if (candidate / name).is_file():
            return candidate / name
    raise FileNotFoundError(f"the shared test media are missing: expected {ROOT.parent / 'shared' / 'data' / name}")


def _frame(video: str, index: int) -> np.ndarray:
    """Frame `index` (decoded in order, not seeked) as RGB."""
    import cv2

    capture = cv2.VideoCapture(str(_shared_video(video)))
    try:
        for _ in range(index + 1):
            ok, bgr = capture.read()
            assert ok, f"{video} has fewer than {index + 1} frames"
    finally:
        capture.release()
    return np.ascontiguousarray(bgr[..., ::-1])


def _built(model: catalog.PretrainedModel) -> Path:
    cache = catalog.default_cache()
    if catalog.read_stamp(model, cache) is None:
        pytest.fail(f"{model.name} is not built in {cache}: run `make pretrained` first")
    return catalog.model_dir(model, cache)


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


# ---------------------------------------------------------------- the TF.js graph reader


def _write_graph_model(directory: Path, tf, kernel: np.ndarray, bias: np.ndarray) -> Path:
    """model.json + weights.bin of: input [1, 4, 4, 2] -> FusedDepthwiseConv2dNative(+BiasAdd, Relu)
    -> Reshape to [1, -1],
    written as TF.js writes them (float16 kernel and bias, the int64 shape stored as int32)."""
    from google.protobuf import json_format

    graph = tf.compat.v1.GraphDef()
    placeholder = graph.node.add(name="input", op="Placeholder")
    placeholder.attr["dtype"].type = tf.float32.as_datatype_enum
    placeholder.attr["shape"].shape.dim.add(size=1)
    for size in (4, 4, 2):
        placeholder.attr["shape"].shape.dim.add(size=size)
    for name, dtype in (("kernel", tf.float32), ("bias", tf.float32), ("shape", tf.int64)):
        node = graph.node.add(name=name, op="Const")
        node.attr["dtype"].type = dtype.as_datatype_enum
        node.attr["value"].tensor.dtype = dtype.as_datatype_enum
    fused = graph.node.add(name="conv", op="FusedDepthwiseConv2dNative", input=["input", "kernel", "bias"])
    fused.attr["T"].type = tf.float32.as_datatype_enum
    fused.attr["strides"].list.i.extend([1, 1, 1, 1])
    fused.attr["padding"].s = b"SAME"
    fused.attr["data_format"].s = b"NHWC"
    fused.attr["dilations"].list.i.extend([1, 1, 1, 1])
    fused.attr["fused_ops"].list.s.extend([b"BiasAdd", b"Relu"])
    fused.attr["num_args"].i = 1
    reshape = graph.node.add(name="output", op="Reshape", input=["conv", "shape"])
    reshape.attr["T"].type = tf.float32.as_datatype_enum
    reshape.attr["Tshape"].type = tf.int64.as_datatype_enum
    weights = [
        ("kernel", kernel.astype(np.float16), "float32", {"dtype": "float16", "original_dtype": "float32"}),
        ("bias", bias.astype(np.float16), "float32", {"dtype": "float16", "original_dtype": "float32"}),
        ("shape", np.array([1, -1], np.int32), "int32", None),
    ]
    (directory / "weights.bin").write_bytes(b"".join(values.tobytes() for _, values, _, _ in weights))
    manifest = [{"paths": ["weights.bin"], "weights": [
        {"name": name, "shape": list(values.shape), "dtype": dtype, **({"quantization": q} if q else {})}
        for name, values, dtype, q in weights]}]
    model = {"format": "graph-model", "modelTopology": json_format.MessageToDict(graph), "weightsManifest": manifest}
    (directory / "model.json").write_text(json.dumps(model))
    return directory / "model.json"


def test_the_tfjs_reader_undoes_quantization_int32_storage_and_tfjs_only_ops(tmp_path, tf):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 1)).astype(np.float16).astype(np.float32)  # exactly representable
    bias = np.array([0.5, -100.0], np.float32)
    images = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)

    # Exported for a batch of one (its Reshape says [1, -1]); read to take any batch.
    function = tfjs_graph.to_function(_write_graph_model(tmp_path, tf, kernel, bias), ["input:0"], ["output:0"], any_batch=True)
    (result,) = function(tf.constant(images))

    expected = tf.nn.relu(tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "SAME") + bias).numpy().reshape(3, -1)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert result.shape == (3, 32) and float(np.max(result.numpy()[:, 1::2])) == 0.0  # Relu ran


def test_weights_that_do_not_fill_the_weight_file_are_refused(tmp_path, tf):
    model_json = _write_graph_model(tmp_path, tf, np.zeros((3, 3, 2, 1), np.float32), np.zeros(2, np.float32))
    with (tmp_path / "weights.bin").open("ab") as file:
        file.write(b"\x00" * 4)

    with pytest.raises(tfjs_graph.GraphModelError, match="4 bytes more than the manifest lists"):
        tfjs_graph.load_graph_def(model_json)


# ---------------------------------------------------------------- the converted models on real frames


@pytest.fixture(scope="module")
def detector(tf):
    directory = _built(catalog.COCO_NANODET)
    return tf.saved_model.load(str(directory / "saved_model")), (directory / "labels.txt").read_text().splitlines()


def _detect(tf, detector, frames: list[np.ndarray], threshold: float = 0.5) -> list[list[detections.Detection]]:
    model, labels = detector
    outputs = model.signatures["serving_default"](images=tf.constant(np.stack(frames)))
    height, width = frames[0].shape[:2]
    return detections.boxes_in_pixels({key: value.numpy() for key, value in outputs.items()},
                                      [(width, height)] * len(frames), labels, threshold)


def test_the_detector_finds_the_car_in_a_real_frame(tf, detector):
    (found,) = _detect(tf, detector, [_frame("car-detection.mp4", 345)])

    cars = [d for d in found if d.label == "car"]
    assert cars, f"no car scored 0.5 or more; found {found}"
    car = cars[0]
    # The car enters at the bottom left of the 768x432 frame.
    assert 60 < (car.x1 + car.x2) / 2 < 360 and (car.y1 + car.y2) / 2 > 330 and car.y2 <= 432


def test_the_detector_finds_bottles_in_a_batch_of_real_frames(tf, detector):
    frame = _frame("bottle-detection.mp4", 50)
    single, (batched, flipped) = _detect(tf, detector, [frame])[0], _detect(tf, detector, [frame, np.ascontiguousarray(frame[:, ::-1])])

    bottles = [d for d in single if d.label == "bottle"]
    assert len(bottles) >= 2, f"expected the bottles; found {single}"
    assert any(270 < (d.x1 + d.x2) / 2 < 360 and d.y1 < 150 and d.y2 > 280 for d in bottles)
    # One batch gives each image its own answer, and the same as alone.
    assert [(d.label, round(d.score, 3)) for d in batched] == [(d.label, round(d.score, 3)) for d in single]
    assert [d.label for d in flipped].count("bottle") >= 2


def test_the_served_signatures_are_what_the_exporter_expects(tf, detector):
    classifier = tf.saved_model.load(str(_built(catalog.IMAGENET_LITE0) / "saved_model"))

    detector_info = exporter.inspect_signature(exporter._signature(detector[0]), exporter.DETECTION, 512)
    classifier_info = exporter.inspect_signature(exporter._signature(classifier), exporter.CLASSIFICATION, 512)

    assert (detector_info["input_name"], detector_info["input_dtype"], detector_info["batched"]) == ("images", "uint8", True)
    assert (classifier_info["output_name"], classifier_info["output_size"]) == ("probabilities", 1000)


def test_the_imagenet_classifier_sees_a_water_bottle(tf):
    directory = _built(catalog.IMAGENET_LITE0)
    model = tf.saved_model.load(str(directory / "saved_model"))
    labels = (directory / "labels.txt").read_text().splitlines()

    probabilities = model.signatures["serving_default"](images=tf.constant(_frame("bottle-detection.mp4", 590)[np.newaxis]))["probabilities"].numpy()

    assert probabilities.shape == (1, 1000) and abs(float(probabilities.sum()) - 1.0) < 1e-3
    assert labels[int(np.argmax(probabilities[0]))] == "water bottle"


def test_the_feature_extractor_loads_safely_and_gives_1280_features():
    import keras

    directory = _built(catalog.IMAGENET_LITE0)
    features = keras.saving.load_model(directory / "features.keras", safe_mode=True)

    frames = np.stack([_frame("bottle-detection.mp4", 0), _frame("bottle-detection.mp4", 590)])
    import tensorflow as tf

    pooled = features(tf.image.resize(frames.astype(np.float32), (224, 224)), training=False).numpy()
    assert pooled.shape == (2, 1280) and np.all(np.isfinite(pooled)) and pooled.std() > 0
