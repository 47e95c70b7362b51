"""The built-in recipes for real, in this process (no sandbox): the transfer recipe on the
EfficientNet-Lite0 backbone built at setup (without it this fails and says so, rather than
skip), its feature cache and fine-tuning, and the scratch recipe, on small coloured images."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_service.pretrained import catalog
from model_service.training import recipe


def _backbone() -> Path:
    cache = catalog.default_cache()
    if catalog.read_stamp(catalog.IMAGENET_LITE0, cache) is None:
        pytest.fail(f"{catalog.IMAGENET_LITE0.name} is not built in {cache}: run `make pretrained` first")
    return catalog.model_dir(catalog.IMAGENET_LITE0, cache) / "features.keras"


def _dataset(root: Path) -> Path:
    for tag, rgb in (("blue", (40, 40, 210)), ("red", (210, 40, 40))):
        (root / tag).mkdir(parents=True)
        for index in range(5):
            noise = np.random.default_rng(index).integers(-25, 26, (40, 48, 3))
            out = io.BytesIO()
            Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(out, "PNG")
            (root / tag / f"{index + 10 * len(tag)}.png").write_bytes(out.getvalue())
    return root


def _params(**given) -> dict:
    reports = []
    return {"epochs": 3, "image_size": 32, "batch_size": 4, "validation_split": 0.2, "learning_rate": 0.001,
            "patience": 3, "seed": 1, "labels": ["blue", "red"], "report": lambda *args, **kw: reports.append(args),
            "reports": reports, **given}


def test_the_transfer_recipe_caches_features_fine_tunes_and_saves_one_model_with_the_backbone(tmp_path):
    import keras

    data = _dataset(tmp_path / "data")
    first = _params(backbone=str(_backbone()), held_out=["blue/40.png", "red/31.png"], fine_tune=1, augment="flip")
    metrics = recipe.train(str(data), str(tmp_path / "out"), first)
    assert metrics["images_featurised"] == 10 and metrics["fine_tuned_blocks"] == 1
    assert metrics["epochs_run"] >= 3 and 0 <= metrics["held_out_accuracy"] <= 1
    cached = sorted(path.name for path in (tmp_path / "out" / "features").iterdir())
    assert len(cached) == 20 and sum(name.endswith("-flip.npy") for name in cached) == 10  # two views of each image
    assert first["reports"][-1][1] == 3 + recipe.FINE_TUNE_EPOCHS  # progress counts the fine-tuning epochs too
    model = keras.models.load_model(tmp_path / "out" / "model.keras", compile=False, safe_mode=True)
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 2)

    again = _params(backbone=str(_backbone()), feature_cache=str(tmp_path / "out" / "features"), augment="flip")
    metrics = recipe.train(str(data), str(tmp_path / "again"), again)
    assert metrics["images_featurised"] == 0  # every view came from the cache


def test_the_scratch_recipe_trains_a_small_cnn_at_image_size(tmp_path):
    import keras

    data = _dataset(tmp_path / "data")
    metrics = recipe.train(str(data), str(tmp_path / "out"), _params(recipe="scratch"))
    assert {"accuracy", "held_out_accuracy", "epochs_run"} <= set(metrics)
    model = keras.models.load_model(tmp_path / "out" / "model.keras", compile=False)
    assert model.input_shape == (None, 32, 32, 3)


def test_the_transfer_recipe_without_a_backbone_says_to_train_from_scratch(tmp_path):
    with pytest.raises(RuntimeError, match="recipe=scratch"):
        recipe.train(str(_dataset(tmp_path / "data")), str(tmp_path / "out"), _params())


def test_the_head_cannot_stop_before_it_has_learnt_and_keeps_its_best_weights():
    """Held-out labels that contradict the training labels: the held-out loss only grows, yet
    the head trains MIN_EPOCHS (and `patience` more) before it stops, and keeps the weights of its
    best epoch from then on; progress is reported for the last epoch run."""
    import keras

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, recipe.FEATURES)).astype("float32")
    y = np.array([0, 1] * 6)
    head = recipe._head(keras, 2)
    head.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reports = []
    epochs_run = recipe.fit_head(head, (x, y), (x[:4], 1 - y[:4]), {0: 1.0, 1: 1.0}, 50, 3,
                                 recipe._Progress(lambda *args, **metrics: reports.append((args, metrics)), 50))
    assert epochs_run == recipe.MIN_EPOCHS + 1 + 3  # the first epoch watched sets the mark, 3 more fail to beat it
    assert reports[-1][0] == (epochs_run, 50) and {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(reports[-1][1])
    best_loss = reports[-1][1]["val_loss"]  # the last epoch's: worse than the kept weights'
    kept_loss, _ = head.test_on_batch(x[:4], 1 - y[:4])
    assert kept_loss < best_loss


def test_the_transfer_recipe_fits_in_the_trainers_default_memory_with_a_few_dozen_images(tmp_path):
    """Run as the trainer runs it, under RLIMIT_DATA = TRAINING_MEMORY_MB's default: 48 images
    (all featurised in one backbone call, they needed more and the process died of SIGSEGV)."""
    import dataclasses
    import os
    import subprocess
    import sys

    from model_service.settings import ModelSettings

    memory_mb = next(field.default for field in dataclasses.fields(ModelSettings) if field.name == "training_memory_mb")
    data = tmp_path / "data"
    for tag, rgb in (("blue", (40, 40, 210)), ("red", (210, 40, 40))):
        (data / tag).mkdir(parents=True)
        for index in range(24):
            noise = np.random.default_rng(index).integers(-25, 26, (24, 32, 3))
            Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(data / tag / f"{index}.png")
    program = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_DATA, ({memory_mb << 20}, {memory_mb << 20}))\n"
        "from model_service.training import recipe\n"
        f"params = {{'epochs': 3, 'image_size': 32, 'batch_size': 4, 'validation_split': 0.2, 'learning_rate': 0.001, "
        f"'patience': 3, 'seed': 1, 'backbone': {str(_backbone())!r}, 'report': lambda *a, **k: None}}\n"
        f"print(recipe.train({str(data)!r}, {str(tmp_path / 'out')!r}, params)['images_featurised'])\n"
    )
    service_root = str(Path(recipe.__file__).resolve().parents[2])
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, (service_root, os.environ.get("PYTHONPATH"))))}
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "48"
