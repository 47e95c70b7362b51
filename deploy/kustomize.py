"""Builds a kustomization the way `kustomize build` does, for the subset that deploy/kubernetes uses.

The tests must render every overlay on any machine, and kustomize is neither on PyPI nor in
Debian 12 (its `kubernetes-client` package carries a kubectl from 2021 with kustomize v2, which
predates `patches` and `labels`). Where a recent `kubectl` is installed, the tests also compare
this renderer's output with `kubectl kustomize`, object by object.

Supported, in kustomize's order: `resources` (files and directories), `components` (directories
whose kustomization is a `Component`, applied to what the resources gave), `configMapGenerator` and
`secretGenerator` (literals and files; behavior create, merge or replace), `patches` (strategic
merge, from a file or inline, with an optional `target` by kind and name), `namespace`,
`labels` (metadata only), `replicas` and `images`. Generated names carry no hash suffix
(`generatorOptions.disableNameSuffixHash: true` is required). Anything else in a kustomization
is an error, never silently ignored.

    python -m deploy.kustomize deploy/kubernetes/overlays/dev
"""
from __future__ import annotations

import base64
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_FIELDS = {
    "apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches",
    "configMapGenerator", "secretGenerator", "generatorOptions", "components",
}
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# Kinds that live outside namespaces (of those a kustomization here could hold).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass", "IngressClass"}
# Lists that strategic merge patches merge item by item, by this key (from the Kubernetes API's
# patchMergeKey); every other list is replaced whole.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "volumeMounts": "mountPath", "env": "name", "imagePullSecrets": "name", "ports": None,
}
POD_TEMPLATE_PATHS = (("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec"))


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not support, or is wrong."""


Resource = dict[str, Any]


def _key(resource: Resource) -> tuple[str, str]:
    return resource.get("kind", ""), resource.get("metadata", {}).get("name", "")


def load_documents(path: Path) -> list[Resource]:
    """The non-empty YAML documents of a file."""
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def _kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise KustomizeError(f"{directory} has no kustomization.yaml")


# --- strategic merge ---------------------------------------------------------------------------

def _merge_key(field: str, items: list) -> str | None:
    key = MERGE_KEYS.get(field, "absent")
    if key == "absent":
        return None
    if key is None:  # ports: containerPort in containers, port in Services
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return key


def _merge_list(field: str, original: list, patch: list) -> list:
    key = _merge_key(field, original + patch)
    if key is None or not all(isinstance(i, dict) for i in original + patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "delete")]
    merged = [copy.deepcopy(i) for i in original]
    for item in patch:
        if key not in item:
            raise KustomizeError(f"a patch item of {field!r} has no merge key {key!r}: {item}")
        index = next((n for n, existing in enumerate(merged) if existing.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(_strip_directives(item))
        else:
            merged[index] = strategic_merge(merged[index], item)
    return merged


def _strip_directives(value):
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def strategic_merge(original: dict, patch: dict) -> dict:
    """`original` with `patch` applied: maps merge, `null` deletes a field, lists with a merge
    key merge item by item (`$patch: delete` removes one), other lists are replaced,
    `$patch: replace` replaces a whole map."""
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    unknown = [k for k in patch if k.startswith("$") and k != "$patch"]
    if unknown:
        raise KustomizeError(f"unsupported patch directives {unknown}")
    result = copy.deepcopy(original)
    for field, value in patch.items():
        if field == "$patch":
            continue
        if value is None:
            result.pop(field, None)
        elif isinstance(value, dict) and isinstance(result.get(field), dict):
            result[field] = strategic_merge(result[field], value)
        elif isinstance(value, list) and isinstance(result.get(field), list):
            result[field] = _merge_list(field, result[field], value)
        else:
            result[field] = _strip_directives(value)
    return result


# --- generators ------------------------------------------------------------------------------

def _generator_data(directory: Path, spec: dict) -> dict[str, str]:
    unknown = set(spec) - {"name", "literals", "files", "behavior", "type"}
    if unknown:
        raise KustomizeError(f"generator {spec.get('name')}: unsupported fields {sorted(unknown)}")
    data: dict[str, str] = {}
    for literal in spec.get("literals", []):
        name, sep, value = literal.partition("=")
        if not sep:
            raise KustomizeError(f"generator {spec['name']}: literal {literal!r} has no '='")
        data[name] = value
    for entry in spec.get("files", []):
        name, sep, path = entry.partition("=")
        file = directory / (path if sep else name)
        data[name if sep else file.name] = file.read_text()
    return data


def _generate(kind: str, spec: dict, directory: Path) -> Resource:
    data = _generator_data(directory, spec)
    resource: Resource = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        resource["type"] = spec.get("type", "Opaque")
        resource["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}
    else:
        resource["data"] = dict(sorted(data.items()))
    return resource


def _apply_generators(resources: list[Resource], kustomization: dict, directory: Path) -> None:
    generators = [("ConfigMap", spec) for spec in kustomization.get("configMapGenerator", [])]
    generators += [("Secret", spec) for spec in kustomization.get("secretGenerator", [])]
    if not generators:
        return
    options = kustomization.get("generatorOptions", {})
    if options != {"disableNameSuffixHash": True}:
        raise KustomizeError(f"{directory}: generators need exactly generatorOptions: {{disableNameSuffixHash: true}}")
    for kind, spec in generators:
        generated = _generate(kind, spec, directory)
        behavior = spec.get("behavior", "create")
        existing = next((r for r in resources if _key(r) == (kind, spec["name"])), None)
        if behavior == "create":
            if existing is not None:
                raise KustomizeError(f"{kind} {spec['name']} already exists; use behavior merge or replace")
            resources.append(generated)
        elif behavior in ("merge", "replace"):
            if existing is None:
                raise KustomizeError(f"{kind} {spec['name']}: nothing to {behavior}")
            if behavior == "merge":
                existing["data"] = dict(sorted({**existing.get("data", {}), **generated["data"]}.items()))
            else:
                existing["data"] = generated["data"]
        else:
            raise KustomizeError(f"{kind} {spec['name']}: unknown behavior {behavior!r}")


# --- transformers ------------------------------------------------------------------------------

def _apply_patches(resources: list[Resource], kustomization: dict, directory: Path) -> None:
    for entry in kustomization.get("patches", []):
        unknown = set(entry) - {"path", "patch", "target"}
        if unknown:
            raise KustomizeError(f"patch: unsupported fields {sorted(unknown)}")
        text = (directory / entry["path"]).read_text() if "path" in entry else entry["patch"]
        documents = [doc for doc in yaml.safe_load_all(text) if doc]
        for patch in documents:
            if not isinstance(patch, dict):
                raise KustomizeError("only strategic merge patches are supported (a JSON 6902 patch is a list)")
            target = entry.get("target")
            if target is not None and set(target) - {"kind", "name"}:
                raise KustomizeError(f"patch target: only kind and name are supported, not {sorted(target)}")
            wanted = target
            if wanted is None:
                wanted = {"kind": patch.get("kind"), "name": patch.get("metadata", {}).get("name")}
            matches = [r for r in resources
                       if r.get("kind") == wanted.get("kind", r.get("kind"))
                       and r["metadata"]["name"] == wanted.get("name", r["metadata"]["name"])]
            # The patch's identity is its target's: only its content is merged.
            body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
            metadata = {k: v for k, v in patch.get("metadata", {}).items() if k not in ("name", "namespace")}
            if metadata:
                body["metadata"] = metadata
            if not matches:
                raise KustomizeError(f"patch {entry.get('path', '(inline)')} matches no resource")
            for resource in matches:
                merged = strategic_merge(resource, body)
                resource.clear()
                resource.update(merged)


def _apply_namespace(resources: list[Resource], namespace: str | None) -> None:
    if not namespace:
        return
    for resource in resources:
        if resource.get("kind") not in CLUSTER_SCOPED:
            resource.setdefault("metadata", {})["namespace"] = namespace


def _apply_labels(resources: list[Resource], entries: list[dict]) -> None:
    for entry in entries:
        if set(entry) - {"pairs"} or entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise KustomizeError("labels: only `pairs` (metadata labels) is supported")
        for resource in resources:
            labels = resource.setdefault("metadata", {}).setdefault("labels", {})
            labels.update({k: str(v) for k, v in entry["pairs"].items()})


def _apply_replicas(resources: list[Resource], entries: list[dict]) -> None:
    for entry in entries:
        matches = [r for r in resources if r.get("kind") in ("Deployment", "StatefulSet", "ReplicaSet")
                   and r["metadata"]["name"] == entry["name"]]
        if not matches:
            raise KustomizeError(f"replicas: no workload named {entry['name']!r}")
        for resource in matches:
            resource["spec"]["replicas"] = entry["count"]


def pod_specs(resource: Resource) -> list[dict]:
    """The pod specs inside a workload (Deployment, StatefulSet, Job, CronJob...)."""
    found = []
    for path in POD_TEMPLATE_PATHS:
        node: Any = resource
        for step in path:
            node = node.get(step) if isinstance(node, dict) else None
        if isinstance(node, dict):
            found.append(node)
    return found


def _image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def _apply_images(resources: list[Resource], entries: list[dict]) -> None:
    for entry in entries:
        unknown = set(entry) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise KustomizeError(f"images: unsupported fields {sorted(unknown)}")
        for resource in resources:
            for spec in pod_specs(resource):
                for container in spec.get("containers", []) + spec.get("initContainers", []):
                    image = container.get("image", "")
                    if _image_name(image) != entry["name"]:
                        continue
                    name = entry.get("newName", entry["name"])
                    rest = image[len(_image_name(image)):]
                    if "digest" in entry:
                        container["image"] = f"{name}@{entry['digest']}"
                    elif "newTag" in entry:
                        container["image"] = f"{name}:{entry['newTag']}"
                    else:
                        container["image"] = name + rest


# --- build -------------------------------------------------------------------------------------

def build(directory: Path | str) -> list[Resource]:
    """The resources that `kustomize build directory` outputs (order aside)."""
    directory = Path(directory)
    resources: list[Resource] = []
    _apply(resources, _load(directory), directory)
    return resources


def _load(directory: Path) -> dict:
    kustomization = yaml.safe_load(_kustomization_file(directory).read_text()) or {}
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    return kustomization


def _apply(resources: list[Resource], kustomization: dict, directory: Path) -> None:
    """Adds the kustomization's resources to `resources`, then applies its components, generators
    and transformers to all of them."""
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        loaded = build(path) if path.is_dir() else load_documents(path)
        for resource in loaded:
            if any(_key(resource) == _key(r) for r in resources):
                kind, name = _key(resource)
                raise KustomizeError(f"{directory}: {kind} {name} is declared twice")
            resources.append(resource)
    for entry in kustomization.get("components", []):
        path = (directory / entry).resolve()
        component = _load(path)
        if component.get("kind") != "Component":
            raise KustomizeError(f"{path}: a component's kustomization has kind Component")
        _apply(resources, component, path)
    _apply_generators(resources, kustomization, directory)
    _apply_patches(resources, kustomization, directory)
    _apply_namespace(resources, kustomization.get("namespace"))
    _apply_labels(resources, kustomization.get("labels", []))
    _apply_replicas(resources, kustomization.get("replicas", []))
    _apply_images(resources, kustomization.get("images", []))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m deploy.kustomize DIRECTORY\n")
        return 2
    yaml.safe_dump_all(build(argv[0]), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
