"""The TF Serving stand-in's own rules: which versions a policy serves, the command the launcher
runs, and loading each version once (its gRPC behaviour is held to the real server's contract by
tests/test_tfserving_contract.py)."""
import pytest
from tensorflow_serving.config import model_server_config_pb2

import tfserving_standin
from tfserving_standin import manager as manager_mod
from tfserving_standin.manager import ConfigError, ModelManager, ServableNotFound, wanted_versions


def model_config(policy: str = "", versions=(), latest: int = 0, base_path: str = "/models/m", name: str = "m"):
    entry = model_server_config_pb2.ModelConfig(name=name, base_path=base_path, model_platform="tensorflow")
    if policy == "specific":
        entry.model_version_policy.specific.versions.extend(versions)
    elif policy == "all":
        entry.model_version_policy.all.SetInParent()
    elif policy == "latest":
        entry.model_version_policy.latest.num_versions = latest
    return entry


@pytest.mark.parametrize("config, expected", [
    (model_config(), [7]),
    (model_config("latest", latest=2), [3, 7]),
    (model_config("all"), [1, 3, 7]),
    (model_config("specific", versions=[3, 9]), [3, 9]),
])
def test_version_policies(config, expected):
    assert wanted_versions(config, [1, 3, 7]) == expected


def test_server_command_prefers_the_real_server(monkeypatch):
    monkeypatch.setattr(tfserving_standin.shutil, "which", lambda name: "/usr/bin/tensorflow_model_server")
    assert tfserving_standin.server_command(8500, "/m.config")[:2] == ["/usr/bin/tensorflow_model_server", "--port=8500"]
    monkeypatch.setattr(tfserving_standin.shutil, "which", lambda name: None)
    command = tfserving_standin.server_command(8500, "/m.config", python="python3")
    assert command[:3] == ["python3", "-m", "tfserving_standin"] and "--model_config_file=/m.config" in command


def test_each_version_is_loaded_once_and_unloaded_when_dropped(tmp_path, monkeypatch):
    loads = []

    def fake_load(path, version):
        loads.append((path.parent.name, version))
        return manager_mod.LoadedVersion(version, object(), {}, {})

    monkeypatch.setattr(manager_mod, "load_version", fake_load)
    for version in (1, 2):
        (tmp_path / "m" / str(version)).mkdir(parents=True)
        (tmp_path / "m" / str(version) / "saved_model.pb").write_bytes(b"")
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.append(model_config("specific", versions=[1], base_path=str(tmp_path / "m")))
    manager = ModelManager(max_load_retries=0)
    manager.apply(config)
    manager.apply(config)
    manager.sync()
    assert loads == [("m", 1)] and manager.servable("m").version == 1
    config.model_config_list.config[0].model_version_policy.specific.versions[:] = [2]
    manager.apply(config)
    assert loads == [("m", 1), ("m", 2)] and manager.servable("m", 2).version == 2
    with pytest.raises(ServableNotFound):
        manager.servable("m", 1)
    manager.apply(model_server_config_pb2.ModelServerConfig())
    with pytest.raises(ServableNotFound):
        manager.statuses("m")


def test_failed_loads_are_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(manager_mod, "load_version", lambda path, version: (_ for _ in ()).throw(OSError("corrupt")))
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.append(model_config(base_path=str(tmp_path / "m")))
    manager = ModelManager(max_load_retries=0)
    manager.apply(config)
    (version, status), = manager.statuses("m")
    assert version == 1 and "corrupt" in status.error and manager.failed_models() == ["m"]


def test_bad_configs_are_refused():
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.extend([model_config(), model_config()])
    with pytest.raises(ConfigError, match="twice"):
        ModelManager().apply(config)
