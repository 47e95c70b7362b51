"""The launcher's configuration, the environment it gives each process, its secrets and its
port check; no process is started here (tests/test_stack.py runs the real stack)."""
from __future__ import annotations

import socket
import stat

import pytest
from mlstudio.common.settings import ConfigError

from deploy.local import config as stack_config
from deploy.local import registry
from deploy.local.envoy import gateway_config
from deploy.local.launcher import ensure_secret
from deploy.local.preflight import busy_ports, ports_in_use
from gateway import render


def load(**environ: str) -> stack_config.StackConfig:
    return stack_config.load(registry.declared_ports(), environ)


def context(config: stack_config.StackConfig) -> registry.Context:
    return registry.Context(config=config, mongo_uri="mongodb://127.0.0.1:1/?replicaSet=rs0", media_signing_key="k")


def test_defaults():
    config = load()
    assert config.ports["gateway"] == 8000
    assert config.ports["envoy admin"] == 9901
    assert config.ports["mongodb"] == 27117
    assert config.ports["user http"] == 8101 and config.ports["user grpc"] == 9101
    assert config.auth_required is True
    assert config.data_dir.is_absolute()
    assert config.gateway_url == "http://127.0.0.1:8000"


def test_ports_move_with_their_variables_and_must_differ():
    assert load(GATEWAY_PORT="18000").ports["gateway"] == 18000
    with pytest.raises(ConfigError, match="USER_HTTP_PORT and GATEWAY_PORT are both 8101"):
        load(GATEWAY_PORT="8101")
    with pytest.raises(ConfigError, match="MONGO_PORT"):
        load(MONGO_PORT="mongo")
    with pytest.raises(ConfigError, match="AUTH_REQUIRED"):
        load(AUTH_REQUIRED="maybe")


def test_external_mongodb_needs_no_port():
    assert "mongodb" not in ports_in_use(load(MONGO_URI="mongodb://db.example:27017"), registry.COMPONENTS)
    assert "mongodb" in ports_in_use(load(), registry.COMPONENTS)


def test_a_subset_of_components_can_run():
    config = load(MLSTUDIO_ONLY="project,user")
    assert [c.name for c in registry.selected(config)] == ["user", "project"]
    assert set(gateway_config(config, registry.selected(config)).upstreams) == {"user", "project"}
    assert "user http" in ports_in_use(config, registry.selected(config))
    others = {p.name for c in registry.COMPONENTS if c.name not in ("user", "project") for p in c.ports}
    assert not others & set(ports_in_use(config, registry.selected(config)))
    with pytest.raises(ConfigError, match="unknown components"):
        registry.selected(load(MLSTUDIO_ONLY="user,billing"))


def test_each_service_gets_the_common_environment_and_its_own(tmp_path):
    config = load(MLSTUDIO_DATA_DIR=str(tmp_path), AUTH_REQUIRED="false", GATEWAY_PORT="18000")
    specs = {spec.name: spec for spec in registry.process_specs(context(config))}
    user = specs["user"].env
    assert user["HTTP_PORT"] == "8101" and user["GRPC_PORT"] == "9101"
    assert user["DATA_DIR"] == str(tmp_path / "user")
    assert user["STORAGE_URL"] == f"file://{tmp_path}/objects"
    assert user["PUBLIC_BASE_URL"] == "http://127.0.0.1:18000"
    assert user["AUTH_REQUIRED"] == "false"
    assert user["JWT_PRIVATE_KEY_FILE"] == str(tmp_path / "secrets" / "jwt-signing-key.pem")
    assert specs["project"].argv[1:] == ("-m", "project_service")
    listed = {c.grpc_addr_var for c in registry.COMPONENTS if c.grpc_addr_var}
    for variable in registry.GRPC_ADDR_VARS:
        if variable in listed:
            assert specs["project"].env[variable].startswith("127.0.0.1:")
        else:
            assert specs["project"].env[variable] == ""


def test_gateway_routes_the_registry_services_on_the_default_local_ports():
    local = render.preset("local")
    launched = gateway_config(load())
    assert set(launched.upstreams) == {c.name for c in registry.COMPONENTS if c.routed}
    for name, upstream in launched.upstreams.items():
        assert upstream == local.upstreams[name]


def test_secret_is_made_once_and_private(tmp_path):
    path = tmp_path / "media-signing-key"
    first = ensure_secret(path)
    assert len(first) >= 32
    assert ensure_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_busy_port_names_the_variable_to_change():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        problems = busy_ports(load(GATEWAY_PORT=str(port)), registry.COMPONENTS)
    assert f"port {port} (gateway) is already in use; set GATEWAY_PORT to another port" in problems
