"""Uploaded files, archives, TF Serving's repository layout and config file, tensor payloads."""
import io
import os
import stat
import zipfile

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.config import model_server_config_pb2

from mlstudio.common import errors
from model_service import archive, tensors, uploads
from model_service.tfserving_repository import ServedVersion, TFServingRepository


def write_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as out:
        for name, data in members.items():
            out.writestr(name, data)
    return path


@pytest.mark.parametrize("content, expected", [
    (b"\x89HDF\r\n\x1a\n rest", uploads.H5),
    ({"config.json": b"{}", "metadata.json": b"{}", "model.weights.h5": b""}, uploads.KERAS),
    ({"my_model/saved_model.pb": b"", "my_model/variables/variables.index": b""}, uploads.SAVED_MODEL_ZIP),
    ({"saved_model.pb": b""}, uploads.SAVED_MODEL_ZIP),
])
def test_model_format_is_recognised_by_content(tmp_path, content, expected):
    path = tmp_path / "upload"
    if isinstance(content, dict):
        write_zip(path, content)
    else:
        path.write_bytes(content)
    assert uploads.model_format(path) == expected


@pytest.mark.parametrize("content", [b"def train(): pass", b"PK\x03\x04 not really a zip", b""])
def test_other_files_are_415(tmp_path, content):
    path = tmp_path / "upload"
    path.write_bytes(content)
    with pytest.raises(errors.UnsupportedMediaType):
        uploads.model_format(path)


def test_zip_without_a_model_is_415(tmp_path):
    with pytest.raises(errors.UnsupportedMediaType):
        uploads.model_format(write_zip(tmp_path / "upload", {"readme.txt": b"hi"}))


def test_save_streams_with_a_limit(tmp_path):
    target = tmp_path / "out"
    assert uploads.save(uploads.Upload("m.h5", io.BytesIO(b"x" * 3000)), target, 3000, "model file") == 3000
    with pytest.raises(errors.PayloadTooLarge):
        uploads.save(uploads.Upload("m.h5", io.BytesIO(b"x" * 3001)), target, 3000, "model file")
    assert not target.exists()
    with pytest.raises(errors.InvalidArgument, match="empty"):
        uploads.save(uploads.Upload("m.h5", io.BytesIO(b"")), target, 3000, "model file")


def test_unzip_and_find_the_saved_model(tmp_path):
    source = write_zip(tmp_path / "m.zip", {"export/saved_model.pb": b"pb", "export/variables/v.index": b"ix"})
    archive.unzip(source, tmp_path / "out", 1000)
    found = archive.find_saved_model(tmp_path / "out")
    assert found == tmp_path / "out" / "export" and (found / "variables" / "v.index").read_bytes() == b"ix"


@pytest.mark.parametrize("name", ["../evil.pb", "/etc/evil", "a/../../evil", "C:/evil"])
def test_unzip_refuses_members_outside_the_target(tmp_path, name):
    source = write_zip(tmp_path / "m.zip", {name: b"x"})
    with pytest.raises(errors.Unprocessable, match="outside"):
        archive.unzip(source, tmp_path / "out", 1000)
    assert not (tmp_path / "evil.pb").exists()


def test_unzip_refuses_links_and_bombs(tmp_path):
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as out:
        out.writestr(link, "/etc/passwd")
    with pytest.raises(errors.Unprocessable, match="link"):
        archive.unzip(tmp_path / "link.zip", tmp_path / "out", 1000)
    write_zip(tmp_path / "big.zip", {"saved_model.pb": b"0" * 5000})
    with pytest.raises(errors.Unprocessable, match="more than 1000 bytes"):
        archive.unzip(tmp_path / "big.zip", tmp_path / "out2", 1000)


def test_find_saved_model_needs_exactly_one(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(errors.Unprocessable, match="no saved_model.pb"):
        archive.find_saved_model(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    with pytest.raises(errors.Unprocessable, match="more than one"):
        archive.find_saved_model(tmp_path)


def test_pack_and_unpack_a_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "variables").mkdir(parents=True)
    (tree / "saved_model.pb").write_bytes(b"graph")
    (tree / "variables" / "variables.data").write_bytes(os.urandom(1000))
    archive.pack_tree(tree, tmp_path / "t.tar.gz")
    archive.unpack_tree(tmp_path / "t.tar.gz", tmp_path / "copy")
    assert (tmp_path / "copy" / "saved_model.pb").read_bytes() == b"graph"
    assert (tmp_path / "copy" / "variables" / "variables.data").read_bytes() == (tree / "variables" / "variables.data").read_bytes()


def test_repository_install_and_config(tmp_path, computing_saved_model):
    repository = TFServingRepository(tmp_path / "base", tmp_path / "base" / "models.config", server_base="/models")
    repository.prepare()
    empty = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(repository.config_file.read_text(), empty)
    assert empty.WhichOneof("config") == "model_config_list" and not empty.model_config_list.config
    staged = repository.staging_dir()
    (staged / "saved_model.pb").write_bytes(computing_saved_model())
    repository.install("model-7", 3, staged)
    assert repository.has("model-7", 3) and not staged.exists()
    repository.write_config([ServedVersion("model-7", 3), ServedVersion("model-2", 1)])
    written = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(repository.config_file.read_text(), written)
    entries = written.model_config_list.config
    assert [(e.name, e.base_path, e.model_platform, list(e.model_version_policy.specific.versions)) for e in entries] == [
        ("model-2", "/models/model-2", "tensorflow", [1]), ("model-7", "/models/model-7", "tensorflow", [3])]
    repository.remove("model-7")
    assert not repository.has("model-7", 3)


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    np.array([1, -2, 3], dtype=np.int64),
    np.array(2.5, dtype=np.float64),
])
def test_tensors_round_trip(array):
    back = tensors.from_proto(tensors.to_proto(array))
    assert back.dtype == array.dtype and back.shape == array.shape and (back == array).all()


def test_tensors_read_typed_value_fields():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.5, 2.5])
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    assert tensors.from_proto(proto).tolist() == [[1.5, 2.5], [2.5, 2.5]]


def zip_bomb(path, members: int = 1, size: int = 4 << 20):
    """`members` files of `size` zeros each: a few KiB zipped."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for index in range(members):
            out.writestr(f"model/part{index}.bin", b"\0" * size)
    return path


def test_unzip_stops_at_the_first_byte_over_the_cap_and_leaves_nothing(tmp_path, monkeypatch):
    written = []

    def counting_open(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        if "b" in mode and any(flag in mode for flag in "wx"):
            real_write = handle.write
            handle.write = lambda data: written.append(len(data)) or real_write(data)
        return handle

    monkeypatch.setattr(archive, "open", counting_open, raising=False)
    # Honest headers, but together over the cap: each member alone is under it.
    bomb = zip_bomb(tmp_path / "bomb.zip", members=3, size=400_000)
    with pytest.raises(errors.Unprocessable, match="unpacks to more than 1000000 bytes") as caught:
        archive.unzip(bomb, tmp_path / "out", 1_000_000)
    assert sum(written) <= 1_000_000 and not (tmp_path / "out").exists()
    assert str(tmp_path) not in caught.value.message


def test_unzip_counts_bytes_not_the_headers_sizes(tmp_path):
    bomb = zip_bomb(tmp_path / "bomb.zip", size=4 << 20)
    data = bytearray(bomb.read_bytes())
    # Make both headers claim the member unpacks to 10 bytes.
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22: local + 26] = (10).to_bytes(4, "little")
    data[central + 24: central + 28] = (10).to_bytes(4, "little")
    bomb.write_bytes(bytes(data))
    with pytest.raises(errors.Unprocessable) as caught:
        archive.unzip(bomb, tmp_path / "out", 1 << 20)
    assert "model/part0.bin" in caught.value.message and "cannot be unpacked" in caught.value.message
    assert not (tmp_path / "out").exists()


def test_unzip_caps_the_member_count(tmp_path):
    write_zip(tmp_path / "many.zip", {f"f{index}": b"" for index in range(11)})
    with pytest.raises(errors.Unprocessable, match="more than 10 members"):
        archive.unzip(tmp_path / "many.zip", tmp_path / "out", 1000, max_members=10)
    assert not (tmp_path / "out").exists()


def test_unzip_errors_hold_no_server_path(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(errors.Unprocessable) as caught:
        archive.unzip(tmp_path / "bad.zip", tmp_path / "out", 1000)
    assert str(tmp_path) not in caught.value.message and "bad.zip" not in caught.value.message
