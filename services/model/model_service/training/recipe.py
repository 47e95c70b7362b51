"""The built-in training recipes: what trains a model when no script is uploaded (`recipe`).

They follow the script contract (`train(data_dir, output_dir, params)`), so they run exactly as
an uploaded script does, in the sandbox.

`transfer` (the default): transfer learning from EfficientNet-Lite0 (ImageNet), the base the
trainer hands every training read-only (`params["backbone"]`: its `features.keras`, RGB pixels
0..255 at 224x224 in, 1280 pooled features out, preprocessing inside). The backbone is frozen
and only a head (dropout + softmax) is trained, on the backbone's features of each image: those
are computed once per image and view, in calls of `FEATURE_BATCH` images (every view of them in
the same call), and kept in a feature cache keyed by the image's sha256 (the trainer keeps one
cache per backbone version, and passes the cached features in as `params["feature_cache"]`; new
ones are written to `output_dir/features/`), so retraining on the same images costs only the
head. The head is trained on the features held in memory with full-batch steps (one step per
epoch: a few dozen images fit in one batch, and Keras' `fit` spent more time building
per-epoch iterators than learning), so `batch_size` does not apply to it.

Augmentation: the head's dropout on the features is its augmentation (a feature vector is a
summary of the whole image, so a random crop or colour change would need the backbone again per
epoch, which is what caching avoids). Fixed views can be cached: `augment=flip` adds a mirrored
view of every training image; it is off by default because on the few-shot bench it did not
raise accuracy (6 scenes, 6 images each, 5 seeds: 0.98 on later frames without, 0.975 with) and
doubles the backbone's work. Random augmentation (flips) is applied where images go through the
backbone anyway: when fine-tuning. `fine_tune=N` then unfreezes the top N
blocks of the backbone (its batch normalisation stays frozen) and trains them with the head at a
tenth of the learning rate, on images (random flips), which no cache can shorten. The model
saved is the backbone and the head as one Keras model (served as one SavedModel): raw RGB pixels
in, preprocessing inside, as every served model with preprocessing `raw`.

`scratch`: the original ML Studio's small CNN (three convolution + max-pooling blocks, a dense
head with dropout and a softmax), trained from nothing at `image_size` pixels; pixels are
rescaled inside the model.

Both hold out a stratified, seeded share of each tag's images (`validation_split`; the trainer
names them in `params["held_out"]` and records them), weight classes against imbalance, and
stop early on the held-out loss, never before `min_epochs` (a head that has not learned yet is
not the best model), keeping the best weights. They return the training and held-out accuracy.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

BACKBONE_SIZE = 224
FEATURES = 1280
BLOCKS = 16  # EfficientNet-Lite0's blocks, `lite0_blocks-0-...` to `lite0_blocks-15-...`
# The views of an image whose features train the head: as it is, and mirrored with `augment=flip`.
VIEW_SUFFIX = {"image": "", "flip": "-flip"}
VIEW_TRANSFORM = {"image": lambda tf, pixels: pixels, "flip": lambda tf, pixels: tf.image.flip_left_right(pixels)}
MIN_EPOCHS = 10  # early stopping cannot stop before (nor keep weights from before)
HEAD_LEARNING_RATE = 0.003
FINE_TUNE_EPOCHS = 5
# Images per backbone call. Bigger calls are barely faster on CPU and need far more memory: the
# recipe's peak RSS is 2.0 GB at 16 and 3.3 GB at 32, and 42 images in one call fail the
# trainer's default 4 GiB (TRAINING_MEMORY_MB, RLIMIT_DATA) with a segfault.
FEATURE_BATCH = 16
REPORT_EVERY_S = 0.5  # the head runs an epoch in milliseconds: progress is reported at this pace (and at the end)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _files_by_tag(data_dir: str, labels: list[str] | None) -> tuple[list[str], dict[str, list[str]]]:
    root = Path(data_dir)
    tags = list(labels) if labels else sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    files = {tag: sorted(f"{tag}/{path.name}" for path in (root / tag).iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
             for tag in tags}
    return tags, files


def _split(data_dir: str, params: dict):
    """(tags, training [(file, class)], held out [(file, class)]) with files relative to data_dir."""
    from model_service.training import split

    tags, files = _files_by_tag(data_dir, params.get("labels"))
    if params.get("held_out") is not None:
        held = set(params["held_out"])
    else:
        held = split.held_out(files, float(params["validation_split"]), int(params["seed"]))
    training = [(name, index) for index, tag in enumerate(tags) for name in files[tag] if name not in held]
    held_out = [(name, index) for index, tag in enumerate(tags) for name in files[tag] if name in held]
    return tags, training, held_out


def class_weights(labels: list[int], classes: int) -> dict[int, float]:
    """Balanced weights: each class counts as much as the others however many images it has."""
    counts = [labels.count(index) for index in range(classes)]
    return {index: len(labels) / (classes * count) for index, count in enumerate(counts) if count}


def _decode(tf, path, size: int):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.image.resize(tf.cast(image, tf.float32), (size, size))


def _images(tf, data_dir: str, items, size: int, batch_size: int, shuffle_seed: int | None = None, flip: bool = False):
    """A tf.data pipeline of (pixels 0..255 at size x size, class) batches, read as it goes."""
    paths = [os.path.join(data_dir, name) for name, _ in items]
    data = tf.data.Dataset.from_tensor_slices((paths, [label for _, label in items]))
    if shuffle_seed is not None:
        data = data.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    data = data.map(lambda path, label: (_decode(tf, path, size), label), num_parallel_calls=tf.data.AUTOTUNE)
    if flip:
        data = data.map(lambda image, label: (tf.image.random_flip_left_right(image), label))
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _early_stopping(keras, monitor: str, params: dict, epochs: int):
    return keras.callbacks.EarlyStopping(monitor=monitor, patience=int(params["patience"]), restore_best_weights=True,
                                         start_from_epoch=min(MIN_EPOCHS, max(epochs - 1, 0)))


def _progress_callback(report, epochs: int, first_epoch: int = 0, total: int | None = None):
    import keras

    class ReportEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            report(first_epoch + epoch + 1, total or epochs, **{name: float(value) for name, value in (logs or {}).items()})

    return ReportEpochs()


# ----- transfer

def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(folder: str | None, name: str):
    import numpy as np

    if not folder:
        return None
    try:
        values = np.load(os.path.join(folder, name), allow_pickle=False)
    except (OSError, ValueError):
        return None
    return values if values.shape == (FEATURES,) and values.dtype == np.float32 else None


def cache_name(digest: str, view: str) -> str:
    """The cached features of one view of the image whose sha256 is `digest`."""
    return f"{digest}{VIEW_SUFFIX[view]}.npy"


def image_features(backbone, data_dir: str, names: list[str], views: tuple[str, ...], cache_in: str | None, cache_out: Path):
    """The backbone's features of each image's `views`, (images, views, FEATURES): from the
    cache where it has them, else computed (in batches) and written to `cache_out`.
    Returns (features, how many images had a view computed)."""
    import numpy as np
    import tensorflow as tf

    digests = [_sha256(os.path.join(data_dir, name)) for name in names]
    features: dict[tuple[str, str], np.ndarray] = {}
    for digest in set(digests):
        for view in views:
            if (found := _cached(cache_in, cache_name(digest, view))) is not None:
                features[digest, view] = found
    missing = sorted({(digest, name) for digest, name in zip(digests, names, strict=True)
                      if any((digest, view) not in features for view in views)})
    cache_out.mkdir(parents=True, exist_ok=True)
    per_call = max(1, FEATURE_BATCH // len(views))  # every view of a batch in the same backbone call
    for start in range(0, len(missing), per_call):
        batch = missing[start:start + per_call]
        pixels = tf.stack([_decode(tf, os.path.join(data_dir, name), BACKBONE_SIZE) for _, name in batch])
        viewed = tf.concat([VIEW_TRANSFORM[view](tf, pixels) for view in views], axis=0)
        computed = backbone(viewed, training=False).numpy().astype(np.float32)
        for position, view in enumerate(views):
            for index, (digest, _) in enumerate(batch):
                features[digest, view] = computed[position * len(batch) + index]
                np.save(cache_out / cache_name(digest, view), features[digest, view], allow_pickle=False)
    return np.stack([np.stack([features[digest, view] for view in views]) for digest in digests]), len(missing)


class _Progress:
    """`report` at most every REPORT_EVERY_S, and always for the last epoch."""

    def __init__(self, report, total: int):
        self.report, self.total, self.last = report, total, float("-inf")

    def __call__(self, epoch: int, metrics: dict, *, last: bool = False) -> None:
        if last or time.monotonic() - self.last >= REPORT_EVERY_S:
            self.last = time.monotonic()
            self.report(epoch, self.total, **metrics)


def fit_head(head, training, validation, weights: dict[int, float], epochs: int, patience: int, progress) -> int:
    """Trains `head` on features in memory, one full-batch step per epoch; early stopping on the
    held-out loss (the training loss without a held-out set) that cannot stop before MIN_EPOCHS
    nor keep weights from before, restoring the best weights. Returns the epochs run."""
    import numpy as np

    x, y = training
    start = min(MIN_EPOCHS, max(epochs - 1, 0))
    best, best_weights, waited, epoch = np.inf, None, 0, 0
    for epoch in range(1, epochs + 1):
        loss, accuracy = head.train_on_batch(x, y, class_weight=weights)
        logs = {"loss": float(loss), "accuracy": float(accuracy)}
        if validation is not None:
            val_loss, val_accuracy = head.test_on_batch(*validation)
            logs.update(val_loss=float(val_loss), val_accuracy=float(val_accuracy))
        watched = logs["val_loss" if validation is not None else "loss"]
        stop = False
        if epoch > start:
            if watched < best:
                best, best_weights, waited = watched, head.get_weights(), 0
            else:
                waited += 1
                stop = waited >= patience
        progress(epoch, logs, last=stop or epoch == epochs)
        if stop:
            break
    if best_weights is not None:
        head.set_weights(best_weights)
    return epoch


def _head(keras, classes: int):
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dropout(0.2),
                             keras.layers.Dense(classes, activation="softmax")], name="head")


def _unfreeze_top(backbone, blocks: int) -> None:
    """The top `blocks` blocks and the head convolution trainable; batch normalisation stays frozen
    (its statistics from ImageNet, not from a handful of images)."""
    first = BLOCKS - blocks
    for layer in backbone.layers:
        name = layer.name
        top = name.startswith("lite0_conv_head") or any(name.startswith(f"lite0_blocks-{index}-") for index in range(first, BLOCKS))
        layer.trainable = top and type(layer).__name__ != "BatchNormalization"


def train_transfer(data_dir: str, output_dir: str, params: dict) -> dict:
    import keras
    import numpy as np

    started = time.monotonic()
    keras.utils.set_random_seed(int(params["seed"]))
    tags, training, held_out = _split(data_dir, params)
    backbone = keras.models.load_model(params["backbone"], compile=False, safe_mode=True)
    backbone.trainable = False
    load_s = time.monotonic() - started
    cache_out = Path(output_dir) / "features"
    names = [name for name, _ in training + held_out]
    views = ("image", "flip") if params.get("augment") == "flip" else ("image",)
    features, computed = image_features(backbone, data_dir, names, views, params.get("feature_cache"), cache_out)
    features_s = time.monotonic() - started - load_s
    train_labels = [label for _, label in training]
    held_labels = np.array([label for _, label in held_out], dtype=np.int64)
    # every view of a training image is a sample; held-out images are judged as they are
    x = features[:len(training)].reshape(-1, FEATURES)
    y = np.repeat(np.array(train_labels, dtype=np.int64), len(views))
    x_held = features[len(training):, 0]
    validation = (x_held, held_labels) if held_out else None
    epochs = int(params["epochs"])
    fine_tune = int(params.get("fine_tune") or 0)
    total = epochs + (FINE_TUNE_EPOCHS if fine_tune else 0)
    head = _head(keras, len(tags))
    head.compile(optimizer=keras.optimizers.Adam(float(params.get("head_learning_rate") or HEAD_LEARNING_RATE)),
                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    monitor = "val_loss" if validation else "loss"
    epochs_run = fit_head(head, (x, y), validation, class_weights(train_labels, len(tags)), epochs,
                          int(params["patience"]), _Progress(params["report"], total))
    head_s = time.monotonic() - started - load_s - features_s
    model = keras.Model(backbone.input, head(backbone.output), name="mlstudio_transfer")
    metrics = {}
    if fine_tune:
        _unfreeze_top(backbone, min(fine_tune, BLOCKS))
        model.compile(optimizer=keras.optimizers.Adam(float(params["learning_rate"]) / 10),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        import tensorflow as tf

        images = _images(tf, data_dir, training, BACKBONE_SIZE, int(params["batch_size"]), int(params["seed"]), flip=True)
        held_images = _images(tf, data_dir, held_out, BACKBONE_SIZE, int(params["batch_size"])) if held_out else None
        tuned = model.fit(images, validation_data=held_images, epochs=FINE_TUNE_EPOCHS, verbose=2,
                          class_weight=class_weights(train_labels, len(tags)),
                          callbacks=[keras.callbacks.EarlyStopping(monitor=monitor, patience=int(params["patience"]), restore_best_weights=True),
                                     _progress_callback(params["report"], FINE_TUNE_EPOCHS, epochs_run, total)])
        epochs_run += len(tuned.epoch)
        metrics["fine_tuned_blocks"] = min(fine_tune, BLOCKS)
        backbone.trainable = False
        loss, accuracy = model.evaluate(_images(tf, data_dir, training, BACKBONE_SIZE, int(params["batch_size"])), verbose=0)
        if held_out:
            held_loss, held_accuracy = model.evaluate(held_images, verbose=0)
    else:
        loss, accuracy = head.test_on_batch(features[:len(training), 0], np.array(train_labels, dtype=np.int64))
        if held_out:
            held_loss, held_accuracy = head.test_on_batch(x_held, held_labels)
    saving = time.monotonic()
    model.save(Path(output_dir) / "model.keras")
    metrics.update(accuracy=float(accuracy), loss=float(loss), epochs_run=epochs_run, images_featurised=computed,
                   load_s=load_s, features_s=features_s, head_s=head_s, save_s=time.monotonic() - saving,
                   train_s=time.monotonic() - started)
    if held_out:
        metrics.update(held_out_accuracy=float(held_accuracy), held_out_loss=float(held_loss),
                       val_accuracy=float(held_accuracy), val_loss=float(held_loss))
    return metrics


# ----- scratch

def build_model(image_size: int, classes: int, learning_rate: float):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((image_size, image_size, 3)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.GlobalAveragePooling2D(),
        layers.Dropout(0.2),
        layers.Dense(64, activation="relu"),
        layers.Dense(classes, activation="softmax"),
    ], name="mlstudio_cnn")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train_scratch(data_dir: str, output_dir: str, params: dict) -> dict:
    import keras
    import tensorflow as tf

    started = time.monotonic()
    keras.utils.set_random_seed(int(params["seed"]))
    tags, training, held_out = _split(data_dir, params)
    size, batch = int(params["image_size"]), int(params["batch_size"])
    train_data = _images(tf, data_dir, training, size, batch, int(params["seed"]))
    held_data = _images(tf, data_dir, held_out, size, batch) if held_out else None
    model = build_model(size, len(tags), float(params["learning_rate"]))
    epochs = int(params["epochs"])
    monitor = "val_loss" if held_data is not None else "loss"
    history = model.fit(train_data, validation_data=held_data, epochs=epochs, verbose=2,
                        class_weight=class_weights([label for _, label in training], len(tags)),
                        callbacks=[_early_stopping(keras, monitor, params, epochs), _progress_callback(params["report"], epochs)])
    model.save(Path(output_dir) / "model.keras")
    loss, accuracy = model.evaluate(_images(tf, data_dir, training, size, batch), verbose=0)
    metrics = {"accuracy": float(accuracy), "loss": float(loss), "epochs_run": len(history.epoch)}
    if held_data is not None:
        held_loss, held_accuracy = model.evaluate(held_data, verbose=0)
        metrics.update(held_out_accuracy=float(held_accuracy), held_out_loss=float(held_loss),
                       val_accuracy=float(held_accuracy), val_loss=float(held_loss))
    metrics["train_s"] = time.monotonic() - started
    return metrics


def train(data_dir: str, output_dir: str, params: dict) -> dict:
    """Trains with `params["recipe"]` (transfer by default), saves `output_dir/model.keras`,
    returns training and held-out accuracy and loss."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    if params.get("recipe", "transfer") == "scratch":
        return train_scratch(data_dir, output_dir, params)
    if not params.get("backbone"):
        raise RuntimeError("the transfer recipe needs the EfficientNet-Lite0 backbone, which this server does not have; "
                           "train with recipe=scratch")
    return train_transfer(data_dir, output_dir, params)
