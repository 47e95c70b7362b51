"""The built-in training recipe: what trains a model when no script is uploaded.

It follows the script contract (`train(data_dir, output_dir, params)`), so it runs exactly as an
uploaded script does. The model is a small CNN in the spirit of the original ML Studio's:
three convolution + max-pooling blocks, a dense head with dropout and a softmax. Pixels are
rescaled to 0..1 inside the model (a `Rescaling` layer), so the model takes raw 0..255 RGB, as
every served model does with preprocessing `raw`. A validation split measures generalisation,
and early stopping on the validation loss keeps the best weights. Small images (64 pixels by
default) keep an easy dataset to seconds on a couple of CPU cores.
"""
from __future__ import annotations

from pathlib import Path


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


def load_datasets(data_dir: str, params: dict):
    """(train, validation or None, class names) from the folder-per-tag layout."""
    import keras

    common = {"image_size": (params["image_size"], params["image_size"]), "batch_size": params["batch_size"],
              "label_mode": "int", "seed": params["seed"], "shuffle": True}
    split = float(params["validation_split"])
    if split > 0:
        train, validation = keras.utils.image_dataset_from_directory(data_dir, validation_split=split, subset="both", **common)
    else:
        train, validation = keras.utils.image_dataset_from_directory(data_dir, **common), None
    return train, validation, list(train.class_names)


def _progress_callback(report, epochs: int):
    import keras

    class ReportEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            report(epoch + 1, epochs, **{name: float(value) for name, value in (logs or {}).items()})

    return ReportEpochs()


def train(data_dir: str, output_dir: str, params: dict) -> dict:
    """Trains, saves `output_dir/model.keras`, returns train/validation accuracy and loss."""
    import keras

    keras.utils.set_random_seed(int(params["seed"]))
    train_data, validation, class_names = load_datasets(data_dir, params)
    model = build_model(int(params["image_size"]), len(class_names), float(params["learning_rate"]))
    monitor = "val_loss" if validation is not None else "loss"
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=int(params["patience"]), restore_best_weights=True),
        _progress_callback(params["report"], int(params["epochs"])),
    ]
    history = model.fit(train_data, validation_data=validation, epochs=int(params["epochs"]), callbacks=callbacks,
                        shuffle=False, verbose=2)  # the dataset reshuffles itself every epoch
    model.save(Path(output_dir) / "model.keras")
    loss, accuracy = model.evaluate(train_data, verbose=0)
    metrics = {"accuracy": float(accuracy), "loss": float(loss), "epochs_run": len(history.epoch)}
    if validation is not None:
        val_loss, val_accuracy = model.evaluate(validation, verbose=0)
        metrics.update(val_accuracy=float(val_accuracy), val_loss=float(val_loss))
    return metrics
