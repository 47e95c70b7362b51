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
    work = tmp_path_factory.mktemp("exported")
    exporter.export(directory / "light_dark.h5", uploads.H5, "Classification", "raw", 64, work / "out", work, 1 << 30)
    sample_models.zip_tree(work / "out", directory / "exported_light_dark.zip", prefix="model/")
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


def zipped_saved_model(directory, function, destination, module=None):
    module = module or tf.Module()
    module.f = function
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.f})
    return sample_models.zip_tree(directory, destination, prefix="model/")


def test_a_saved_model_that_reads_a_file_is_refused_naming_the_op(tmp_path):
    secret = tmp_path / "secret.key"
    secret.write_text("signing key")

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
    def detect(images):
        leaked = tf.cast(tf.strings.length(tf.io.read_file(str(secret))), tf.float32)
        return {"detection_boxes": tf.zeros([1, 1, 4]), "detection_scores": tf.fill([1, 1], leaked),
                "detection_classes": tf.ones([1, 1])}

    zipped_saved_model(tmp_path / "reader", detect, tmp_path / "reader.zip")
    with pytest.raises(exporter.Unusable, match="the model uses the operation ReadFile, which reads or writes files"):
        exporter.export(tmp_path / "reader.zip", uploads.SAVED_MODEL_ZIP, "Detection", "raw", 64, tmp_path / "out", tmp_path, 1 << 30)
    assert not (tmp_path / "out").exists()


def test_a_tf1_saved_model_that_writes_on_load_is_refused_before_loading(tmp_path):
    """TensorFlow runs a TF1 graph's main op while loading: the check must come first."""
    written = tmp_path / "written-by-the-model"
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")
        scores = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2])
        with tf.compat.v1.Session() as session:
            builder = tf.compat.v1.saved_model.Builder(str(tmp_path / "tf1"))
            signature = tf.compat.v1.saved_model.predict_signature_def({"images": images}, {"scores": scores})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature},
                                                 main_op=tf.io.write_file(str(written), "pwned"))
            builder.save()
    sample_models.zip_tree(tmp_path / "tf1", tmp_path / "tf1.zip")
    with pytest.raises(exporter.Unusable, match="the model uses the operation WriteFile, which reads or writes files"):
        exporter.export(tmp_path / "tf1.zip", uploads.SAVED_MODEL_ZIP, "Classification", "raw", 64, tmp_path / "out", tmp_path, 1 << 30)
    assert not written.exists()


def test_the_converter_caps_unzipped_bytes_and_its_messages_hold_no_server_path(samples, tmp_path):
    import zipfile

    bomb = tmp_path / "model.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("model/saved_model.pb", b"\0" * (8 << 20))  # 8 MiB of zeros, about 8 KiB zipped
    assert bomb.stat().st_size < 100_000
    (tmp_path / "work").mkdir()
    converter = SubprocessConverter(timeout_s=300, max_unzipped_bytes=1 << 20)
    with pytest.raises(errors.Unprocessable) as caught:
        converter.convert(bomb, uploads.SAVED_MODEL_ZIP, "Classification", "raw", tmp_path / "work")
    assert "unpacks to more than 1048576 bytes" in caught.value.message and "/" not in caught.value.message
    assert not list((tmp_path / "work").rglob("unzipped"))

    # A SavedModel without its variables: TensorFlow's error names the path it looked in.
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as out:
        with zipfile.ZipFile(samples / "exported_light_dark.zip") as exported:
            for name in exported.namelist():
                if not name.endswith("variables.index"):
                    out.writestr(name, exported.read(name))
    (tmp_path / "work2").mkdir()
    with pytest.raises(errors.Unprocessable) as caught:
        converter.convert(tmp_path / "broken.zip", uploads.SAVED_MODEL_ZIP, "Classification", "raw", tmp_path / "work2")
    message = caught.value.message
    assert "does not hold a loadable SavedModel" in message and "matching files for variables" in message, message
    assert str(tmp_path) not in message and "unzipped" not in message
