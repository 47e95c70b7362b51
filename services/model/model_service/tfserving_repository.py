"""TF Serving's model repository on disk and its model config file.

Layout (the one `tensorflow_model_server` and the stand-in read):

    <base>/model-<id>/<version>/saved_model.pb, variables/...
    <base>/models.config            text-format ModelServerConfig naming each served model

`base` is where this service writes; `server_base` is the same directory as TF Serving sees it
(they differ when TF Serving runs in a container with the directory mounted elsewhere).
Installing a version is an atomic rename, so TF Serving never sees a half-written SavedModel, and
it is the one door into the repository: every SavedModel is checked there (`graph_safety`) first,
so none that reads, writes or talks to anything is ever served.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from mlstudio.common import errors

from . import graph_safety

CONFIG_HEADER = "# Written by the ML Studio model service from its database; edits are overwritten.\n"


@dataclass(frozen=True)
class ServedVersion:
    """One model version TF Serving must hold."""

    name: str
    version: int


def serving_name(model_id: int) -> str:
    """The name TF Serving knows model `model_id` by."""
    return f"model-{model_id}"


class TFServingRepository:
    def __init__(self, base: Path, config_file: Path, server_base: str | None = None):
        self.base = Path(base).resolve()
        self.config_file = Path(config_file).resolve()
        self.server_base = (server_base or str(self.base)).rstrip("/")
        self.staging = self.base / ".staging"

    def prepare(self) -> None:
        """Creates the directories, and an empty config file if none exists yet."""
        self.staging.mkdir(parents=True, exist_ok=True)
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        if not self.config_file.exists():
            self.write_config([])

    def version_dir(self, name: str, version: int) -> Path:
        return self.base / name / str(version)

    def has(self, name: str, version: int) -> bool:
        return (self.version_dir(name, version) / "saved_model.pb").is_file()

    def staging_dir(self) -> Path:
        """A fresh directory on the repository's filesystem, outside every model's base path."""
        path = self.staging / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def install(self, name: str, version: int, saved_model_dir: Path) -> None:
        """Moves `saved_model_dir` into place as `name`/`version` (replacing an older copy);
        422 (and nothing moved) when its graph does more than compute (`graph_safety`)."""
        try:
            graph_safety.check_saved_model(Path(saved_model_dir))
        except graph_safety.UnsafeModel as exc:
            raise errors.Unprocessable(str(exc), code="unsafe_model") from None
        target = self.version_dir(name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(saved_model_dir, target)

    def remove(self, name: str) -> None:
        shutil.rmtree(self.base / name, ignore_errors=True)

    def config(self, served: list[ServedVersion]) -> model_server_config_pb2.ModelServerConfig:
        """The ModelServerConfig holding exactly `served`, each pinned to its version."""
        config = model_server_config_pb2.ModelServerConfig()
        model_list = config.model_config_list
        model_list.SetInParent()  # an empty list still says which kind of config this is
        for item in sorted(served, key=lambda s: s.name):
            entry = model_list.config.add()
            entry.name = item.name
            entry.base_path = f"{self.server_base}/{item.name}"
            entry.model_platform = "tensorflow"
            entry.model_version_policy.specific.versions.append(item.version)
        return config

    def write_config(self, served: list[ServedVersion]) -> model_server_config_pb2.ModelServerConfig:
        """Writes the config file atomically (a restarted TF Serving reads it) and returns it."""
        config = self.config(served)
        text = CONFIG_HEADER + text_format.MessageToString(config)
        fd, tmp = tempfile.mkstemp(dir=self.config_file.parent, prefix=".models.config-")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(tmp, self.config_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return config
