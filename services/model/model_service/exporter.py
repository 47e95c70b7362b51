"""Converts an uploaded model into the SavedModel that TF Serving serves (TensorFlow side).

Runs in its own process (`python -m model_service.exporter`, started by `conversion`), because
the file is untrusted and loading it takes memory and time: a crash, a hang or a huge model
cannot take the service down, and the process has no credentials in its environment. Where the
platform allows, that process is confined by bubblewrap (see `conversion`); either way, before
anything of the file is read it takes its resource limits (`--memory-bytes`, `--file-bytes`, no
core dumps) and, started as root, becomes the unprivileged user `--uid`/`--gid` for good.

Every served model gets the same `serving_default` signature, so clients need to know nothing
about the original file:

- input `images`: uint8 RGB pixels [batch, height, width, 3], any size (one size per batch);
  the signature resizes them (bilinear) to the model's input size and applies the model's
  preprocessing (raw / unit / symmetric), so clients send decoded pixels, not floats;
- Classification output `probabilities`: [batch, classes], the model's output as it is;
- Detection outputs (TF Object Detection API): `detection_boxes` [batch, k, 4] normalised
  `[ymin, xmin, ymax, xmax]`, `detection_scores` [batch, k], `detection_classes` [batch, k]
  (1-based class ids), `num_detections` [batch]. OD API exports that take one image at a time are
  mapped over the batch inside the signature, so one Predict call still serves a whole batch.

A zipped SavedModel (uploaded, or written by a training) is checked by `graph_safety` before
TensorFlow loads it: graphs that do more than compute are refused. What this exporter writes is
checked again where it is installed for serving (`tfserving_repository`).

Keras `.h5`/`.keras` files load with Keras 3 in safe mode (no `lambda` deserialisation) and
nothing else: files from old Keras 2 that Keras 3 cannot read are refused with a hint (no
fallback loader: the ones that exist would load the untrusted file without safe mode).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
from pathlib import Path

from mlstudio.common import bubblewrap
from mlstudio.common.vocabulary import CLASSIFICATION, DETECTION
from model_service import archive, graph_safety, preprocessing, uploads

DETECTION_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes")
EXIT_UNUSABLE = 3
EXIT_FAILED = 4


class Unusable(Exception):
    """The uploaded file cannot become a served model; the message says why, for a person."""


def _short(exc: BaseException, limit: int = 400) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[:limit] + "..."


def load_keras(path: Path, fmt: str):
    """The Keras model in `path` (Keras 3, safe mode)."""
    import keras

    # Keras picks its loader by file extension.
    named = path.with_name("model." + uploads.extension(fmt))
    if named != path:
        try:
            os.link(path, named)
        except OSError:
            shutil.copyfile(path, named)
    try:
        return keras.saving.load_model(named, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read an untrusted file is the file's
        reason = _short(exc)
    hint = (" If it was saved with old Keras 2 (TensorFlow < 2.16), save it again with Keras 3 "
            "(model.save('model.keras')) or upload a zipped SavedModel.") if fmt == uploads.H5 else ""
    raise Unusable(f"the file does not load as a Keras model ({reason}).{hint}")


def _image_size(shape, dynamic_size: int, what: str) -> tuple[int, int]:
    dims = list(shape)
    if len(dims) != 4 or dims[-1] != 3:
        raise Unusable(f"{what} must be a batch of RGB images (batch, height, width, 3), not {tuple(dims)}")
    height, width = dims[1], dims[2]
    return (height or dynamic_size, width or dynamic_size)


def inspect_keras(model, model_type: str, dynamic_size: int) -> dict:
    if model_type != CLASSIFICATION:
        raise Unusable("Detection models must be zipped TF Object Detection API SavedModels, not Keras files")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise Unusable(f"the model must have one input and one output, not {len(model.inputs)} and {len(model.outputs)}")
    height, width = _image_size(model.inputs[0].shape, dynamic_size, "the model's input")
    output = list(model.outputs[0].shape)
    if len(output) != 2 or not output[1]:
        raise Unusable(f"the model's output must be one score per class (batch, classes), not {tuple(output)}")
    return {"input_shape": [height, width, 3], "output_size": int(output[1]), "input_dtype": "float32"}


def _signature(loaded):
    signatures = dict(loaded.signatures)
    if "serving_default" in signatures:
        return signatures["serving_default"]
    if len(signatures) == 1:
        return next(iter(signatures.values()))
    raise Unusable(f"the SavedModel has no serving_default signature (it has: {sorted(signatures) or 'none'})")


def inspect_signature(function, model_type: str, dynamic_size: int) -> dict:
    inputs = function.structured_input_signature[1]
    if len(inputs) != 1:
        raise Unusable(f"the SavedModel's signature must take one image input, not {sorted(inputs)}")
    (input_name, spec), = inputs.items()
    height, width = _image_size(spec.shape, dynamic_size, f"the SavedModel's input {input_name!r}")
    outputs = function.structured_outputs
    info = {"input_shape": [height, width, 3], "input_name": input_name, "input_dtype": spec.dtype.name,
            "batched": spec.shape[0] != 1}
    if model_type == DETECTION:
        missing = [name for name in DETECTION_OUTPUTS if name not in outputs]
        if missing:
            raise Unusable(f"a Detection SavedModel needs the Object Detection API outputs; missing {missing}")
        info["output_size"] = None
        return info
    if len(outputs) != 1:
        raise Unusable(f"a Classification SavedModel must have one output, not {sorted(outputs)}")
    (output_name, output_spec), = outputs.items()
    shape = list(output_spec.shape)
    if len(shape) != 2 or not shape[1]:
        raise Unusable(f"the SavedModel's output must be one score per class (batch, classes), not {tuple(shape)}")
    info.update(output_name=output_name, output_size=int(shape[1]))
    return info


def _to_model_input(tf, images, height: int, width: int, mode: str, dtype_name: str):
    """uint8 images of any size -> the model's input: resized, scaled, in its dtype."""
    scale, offset = preprocessing.MODES[mode]
    pixels = tf.image.resize(tf.cast(images, tf.float32), (height, width))
    if dtype_name == "uint8":
        if mode != "raw":
            raise Unusable("this model takes uint8 pixels, so its preprocessing must be raw")
        return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)
    return tf.cast(pixels * scale + offset, tf.as_dtype(dtype_name))


def build_module(tf, target, info: dict, model_type: str, mode: str):
    """A tf.Module holding `target` (Keras model or loaded SavedModel) with the `serve` signature."""
    module = tf.Module()
    module.target = target
    height, width, _ = info["input_shape"]
    dtype_name = info["input_dtype"]
    spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")

    if "input_name" not in info:
        @tf.function(input_signature=[spec])
        def serve(images):
            probabilities = module.target(_to_model_input(tf, images, height, width, mode, dtype_name), training=False)
            return {"probabilities": tf.cast(probabilities, tf.float32)}
    elif model_type == CLASSIFICATION:
        function = _signature(target)

        @tf.function(input_signature=[spec])
        def serve(images):
            outputs = function(**{info["input_name"]: _to_model_input(tf, images, height, width, mode, dtype_name)})
            return {"probabilities": tf.cast(outputs[info["output_name"]], tf.float32)}
    else:
        serve = _detection_signature(tf, _signature(target), info, spec, mode)
    module.serve = serve
    return module


def _detection_signature(tf, function, info: dict, spec, mode: str):
    """`serve` for an OD API signature: one call on the whole batch, or one per image (mapped
    inside the graph) when the export takes a batch of one."""
    height, width, _ = info["input_shape"]

    def detect(batch):
        outputs = function(**{info["input_name"]: batch})
        result = {name: tf.cast(outputs[name], tf.float32) for name in DETECTION_OUTPUTS}
        if "num_detections" in outputs:
            result["num_detections"] = tf.cast(outputs["num_detections"], tf.float32)
        else:  # every row of the padded outputs counts
            scores = result["detection_scores"]
            result["num_detections"] = tf.cast(tf.fill([tf.shape(scores)[0]], tf.shape(scores)[1]), tf.float32)
        return result

    def detect_one(image):
        return {key: value[0] for key, value in detect(image[tf.newaxis]).items()}

    @tf.function(input_signature=[spec])
    def serve(images):
        batch = _to_model_input(tf, images, height, width, mode, info["input_dtype"])
        if info["batched"]:
            return detect(batch)
        signature = {name: tf.TensorSpec(None, tf.float32) for name in (*DETECTION_OUTPUTS, "num_detections")}
        return tf.map_fn(detect_one, batch, fn_output_signature=signature)

    return serve


def export(source: Path, fmt: str, model_type: str, mode: str, dynamic_size: int, output: Path, work: Path, max_unzipped_bytes: int) -> dict:
    """Loads, checks and exports the model; returns what was learnt about it."""
    import tensorflow as tf

    if fmt == uploads.SAVED_MODEL_ZIP:
        unpacked = work / "unzipped"
        try:
            archive.unzip(source, unpacked, max_unzipped_bytes)
            directory = archive.find_saved_model(unpacked)
        except Exception as exc:  # noqa: BLE001 - the archive's own message says what is wrong
            raise Unusable(getattr(exc, "message", None) or _short(exc)) from None
        try:
            # Before anything loads it: loading a TF1 graph runs its restore and init ops.
            graph_safety.check_saved_model(directory, max_unzipped_bytes)
        except graph_safety.UnsafeModel as exc:
            raise Unusable(str(exc)) from None
        try:
            target = tf.saved_model.load(str(directory))
        except Exception as exc:  # noqa: BLE001
            raise Unusable(f"the zip does not hold a loadable SavedModel ({_short(exc)})") from None
        info = inspect_signature(_signature(target), model_type, dynamic_size)
    else:
        target = load_keras(source, fmt)
        info = inspect_keras(target, model_type, dynamic_size)
    try:
        module = build_module(tf, target, info, model_type, mode)
    except Unusable:
        raise
    except Exception as exc:  # noqa: BLE001 - tracing runs the user's graph
        raise Unusable(f"the model cannot be wrapped for serving ({_short(exc)})") from None
    tf.saved_model.save(module, str(output), signatures={"serving_default": module.serve})
    return {"input_shape": info["input_shape"], "output_size": info["output_size"]}


def confine_self(memory_bytes: int | None, file_bytes: int | None, uid: int | None, gid: int | None) -> None:
    """Limits, then the unprivileged user: before the untrusted file is opened. Memory is
    RLIMIT_DATA (what is really allocated: RLIMIT_AS would count TensorFlow's large virtual
    reservations). No RLIMIT_NPROC: it counts every process of the user (concurrent trainings run
    as the same `nobody`), and a graph cannot start processes (the op allowlist)."""
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    if file_bytes:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    bubblewrap.drop_privileges(uid, gid, required=uid is not None, hint="set MODEL_EXPORT_USER to an unprivileged user")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--format", choices=[uploads.H5, uploads.KERAS, uploads.SAVED_MODEL_ZIP], required=True)
    parser.add_argument("--type", choices=[CLASSIFICATION, DETECTION], required=True)
    parser.add_argument("--preprocessing", choices=sorted(preprocessing.MODES), default=preprocessing.DEFAULT)
    parser.add_argument("--dynamic-size", type=int, default=512)
    parser.add_argument("--max-unzipped-bytes", type=int, default=2 << 30)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--memory-bytes", type=int, help="RLIMIT_DATA of this process")
    parser.add_argument("--file-bytes", type=int, help="RLIMIT_FSIZE: the largest file it may write")
    parser.add_argument("--uid", type=int, help="started as root: the unprivileged user to become")
    parser.add_argument("--gid", type=int)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.result.parent
    try:
        confine_self(args.memory_bytes, args.file_bytes, args.uid, args.gid)
    except Exception as exc:  # noqa: BLE001 - nothing of the file is read unconfined
        args.result.write_text(json.dumps({"error": f"the converter could not be confined: {_short(exc)}"}))
        return EXIT_FAILED
    try:
        result, code = export(args.source, args.format, args.type, args.preprocessing, args.dynamic_size, args.output, work, args.max_unzipped_bytes), 0
    except Unusable as exc:
        result, code = {"error": str(exc)}, EXIT_UNUSABLE
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which logs it
        result, code = {"error": f"converting the model failed: {_short(exc)}"}, EXIT_FAILED
    args.result.write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
