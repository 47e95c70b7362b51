"""The exporter with real TensorFlow: uploaded Keras files and OD API SavedModels become the
served `serving_default` signature (uint8 images in, resize and preprocessing inside), and
unusable files are refused with the reason. The few tests here that load TensorFlow share files."""
import shutil

import numpy as np
import pytest
import tensorflow as tf

from mlstudio.common import errors
from model_service import exporter, sample_models, uploads
from model_service.conversion import SubprocessConverter


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    directory = tmp_path_factory.mktemp("samples")
    sample_models.write_samples(directory)
    return directory


def export(samples, tmp_path, name, fmt, model_type="Classification", mode="raw", dynamic_size=64):
    source = tmp_path / name
    shutil.copyfile(samples / name, source)
    info = exporter.export(source, fmt, model_type, mode, dynamic_size, tmp_path / "out", tmp_path, 1 << 30)
    return info, tf.saved_model.load(str(tmp_path / "out")).signatures["serving_default"]


def grey(value, height=32, width=32, count=1):
    return tf.constant(np.full((count, height, width, 3), value, np.uint8))


@pytest.mark.parametrize("name, fmt", [("light_dark.h5", uploads.H5), ("light_dark.keras", uploads.KERAS)])
def test_keras_files_serve_the_light_dark_rule(samples, tmp_path, name, fmt):
    info, serve = export(samples, tmp_path, name, fmt)
    assert info == {"input_shape": [32, 32, 3], "output_size": 2}
    assert serve.structured_input_signature[1]["images"].dtype == tf.uint8
    batch = tf.concat([grey(255), grey(0), grey(200)], axis=0)
    probabilities = serve(images=batch)["probabilities"].numpy()
    expected = [sample_models.light_dark_scores(v) for v in (255, 0, 200)]
    assert probabilities == pytest.approx(np.array(expected), abs=1e-5)
    # Any image size: the signature resizes.
    assert serve(images=grey(255, 50, 70))["probabilities"].numpy()[0] == pytest.approx(expected[0], abs=1e-5)


def test_preprocessing_is_baked_into_the_signature(samples, tmp_path):
    _info, serve = export(samples, tmp_path, "light_dark.h5", uploads.H5, mode="unit")
    # With unit scaling a white pixel is 1.0, far below 127.5: dark.
    assert serve(images=grey(255))["probabilities"].numpy()[0] == pytest.approx(sample_models.light_dark_scores(1.0), abs=1e-5)


def test_od_api_saved_model_serves_whole_batches(samples, tmp_path):
    info, serve = export(samples, tmp_path, "detector.zip", uploads.SAVED_MODEL_ZIP, model_type="Detection")
    assert info == {"input_shape": [64, 64, 3], "output_size": None}
    outputs = {k: v.numpy() for k, v in serve(images=tf.concat([grey(255, 64, 64), grey(0, 64, 64), grey(51, 64, 64)], axis=0)).items()}
    assert outputs["detection_boxes"].shape == (3, 2, 4)
    assert outputs["detection_scores"][:, 0] == pytest.approx([1.0, 0.0, 0.2], abs=1e-5)
    assert outputs["detection_classes"].tolist() == [[1, 2]] * 3 and outputs["num_detections"].tolist() == [2, 2, 2]


def unusable(samples, tmp_path, name, fmt, model_type="Classification"):
    with pytest.raises(exporter.Unusable) as caught:
        export(samples, tmp_path, name, fmt, model_type)
    return str(caught.value)


def test_refused_models_say_why(samples, tmp_path):
    import keras

    data = (samples / "light_dark.h5").read_bytes()
    (samples / "truncated.h5").write_bytes(data[: len(data) // 2])
    assert "does not load as a Keras model" in unusable(samples, tmp_path, "truncated.h5", uploads.H5)

    vector = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])
    vector.save(samples / "vector.keras")
    assert "(batch, height, width, 3)" in unusable(samples, tmp_path, "vector.keras", uploads.KERAS)

    inputs = keras.Input((8, 8, 3))
    shifted = keras.layers.Lambda(lambda x: x + 1.0)(inputs)
    keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(shifted))).save(samples / "lambda.keras")
    assert "Lambda" in unusable(samples, tmp_path, "lambda.keras", uploads.KERAS)

    assert "Object Detection API" in unusable(samples, tmp_path, "light_dark.keras", uploads.KERAS, "Detection")


def test_a_detector_zip_is_not_a_classifier(samples, tmp_path):
    assert "must have one output" in unusable(samples, tmp_path, "detector.zip", uploads.SAVED_MODEL_ZIP, "Classification")


def test_the_converter_child_process(samples, tmp_path):
    converter = SubprocessConverter(timeout_s=300)
    shutil.copyfile(samples / "light_dark.h5", tmp_path / "model.h5")
    (tmp_path / "ok").mkdir()
    done = converter.convert(tmp_path / "model.h5", uploads.H5, "Classification", "raw", tmp_path / "ok")
    assert done.input_shape == [32, 32, 3] and done.output_size == 2 and (done.saved_model / "saved_model.pb").is_file()
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    (tmp_path / "bad").mkdir()
    with pytest.raises(errors.Unprocessable, match="does not load as a Keras model"):
        converter.convert(tmp_path / "bad.h5", uploads.H5, "Classification", "raw", tmp_path / "bad")
