"""The kustomize subset renderer (deploy/kustomize.py): each feature the manifests use, and a loud
refusal of what it does not implement."""
from __future__ import annotations

import base64
import textwrap

import pytest
import yaml

from deploy import kustomize

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 1,
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {"name": "web", "image": "example/web", "args": ["--a"],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "volumeMounts": [{"name": "tmp", "mountPath": "/tmp", "readOnly": True}]},
                    {"name": "sidecar", "image": "example/web-sidecar:1.0"},
                ],
                "volumes": [{"name": "tmp", "secret": {"secretName": "s"}}, {"name": "data", "emptyDir": {}}],
            },
        },
    },
}


def write(directory, name, content):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if not isinstance(content, str):
        content = yaml.safe_dump_all(content if isinstance(content, list) else [content])
    path.write_text(content)
    return path


def kustomization(directory, **fields):
    write(directory, "kustomization.yaml", yaml.safe_dump(fields))


def by_key(resources):
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


def test_strategic_merge_merges_keyed_lists_and_replaces_the_others():
    patch = {"spec": {"template": {"spec": {
        "containers": [{"name": "web", "args": ["--b"],
                        "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                        "volumeMounts": [{"mountPath": "/tmp", "name": "tmp", "readOnly": False}]}],
        "volumes": [{"name": "tmp", "secret": None, "emptyDir": {"medium": "Memory"}},
                    {"name": "data", "$patch": "delete"}],
    }}}}
    merged = kustomize.strategic_merge(DEPLOYMENT, patch)
    spec = merged["spec"]["template"]["spec"]
    web, sidecar = spec["containers"]
    assert web["args"] == ["--b"]
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]
    assert web["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp", "readOnly": False}]
    assert sidecar == {"name": "sidecar", "image": "example/web-sidecar:1.0"}
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {"medium": "Memory"}}]
    assert DEPLOYMENT["spec"]["template"]["spec"]["volumes"][0] == {"name": "tmp", "secret": {"secretName": "s"}}


def test_strategic_merge_replace_directive_and_unknown_directives():
    merged = kustomize.strategic_merge({"a": {"x": 1, "y": 2}}, {"a": {"$patch": "replace", "z": 3}})
    assert merged == {"a": {"z": 3}}
    with pytest.raises(kustomize.KustomizeError):
        kustomize.strategic_merge({"a": 1}, {"$setElementOrder/containers": []})


def test_overlay_build_applies_generators_patches_namespace_labels_replicas_and_images(tmp_path):
    base = tmp_path / "base"
    write(base, "web.yaml", DEPLOYMENT)
    kustomization(base, resources=["web.yaml"], generatorOptions={"disableNameSuffixHash": True},
                  configMapGenerator=[{"name": "config", "literals": ["A=1", "URL=http://x?a=b"]}])
    overlay = tmp_path / "overlay"
    write(overlay, "namespace.yaml", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}})
    write(overlay, "key.pem", "PEM\n")
    write(overlay, "patch.yaml", textwrap.dedent("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          template:
            spec:
              containers:
              - {name: web, args: [--patched]}
        """))
    kustomization(
        overlay,
        namespace="ns",
        resources=["namespace.yaml", "../base"],
        labels=[{"pairs": {"env": "test"}}],
        replicas=[{"name": "web", "count": 3}],
        images=[{"name": "example/web", "newName": "registry/web", "newTag": "1.2"},
                {"name": "example/web-sidecar", "digest": "sha256:abc"}],
        patches=[{"path": "patch.yaml"}],
        configMapGenerator=[{"name": "config", "behavior": "merge", "literals": ["A=2"]}],
        secretGenerator=[{"name": "secret", "literals": ["PASSWORD=p=q"], "files": ["key.pem"]}],
        generatorOptions={"disableNameSuffixHash": True},
    )
    resources = by_key(kustomize.build(overlay))
    web = resources[("Deployment", "web")]
    containers = web["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["registry/web:1.2", "example/web-sidecar@sha256:abc"]
    assert containers[0]["args"] == ["--patched"]
    assert web["spec"]["replicas"] == 3
    assert web["metadata"] == {"name": "web", "namespace": "ns", "labels": {"app": "web", "env": "test"}}
    assert web["spec"]["template"]["metadata"]["labels"] == {"app": "web"}
    assert resources[("ConfigMap", "config")]["data"] == {"A": "2", "URL": "http://x?a=b"}
    secret = resources[("Secret", "secret")]
    assert secret["type"] == "Opaque"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"PASSWORD": "p=q", "key.pem": "PEM\n"}
    assert "namespace" not in resources[("Namespace", "ns")]["metadata"]


def test_a_targeted_patch_applies_to_every_match(tmp_path):
    other = {**DEPLOYMENT, "metadata": {"name": "api"}}
    write(tmp_path, "all.yaml", [DEPLOYMENT, other])
    kustomization(tmp_path, resources=["all.yaml"], patches=[{
        "target": {"kind": "Deployment"},
        "patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: any}\nspec: {replicas: 5}\n",
    }])
    assert [r["spec"]["replicas"] for r in kustomize.build(tmp_path)] == [5, 5]


@pytest.mark.parametrize("fields, message", [
    ({"resources": ["web.yaml"], "commonLabels": {"a": "b"}}, "unsupported kustomization fields"),
    ({"resources": ["web.yaml"], "configMapGenerator": [{"name": "c", "literals": ["A=1"]}]}, "disableNameSuffixHash"),
    ({"resources": ["web.yaml"], "patches": [{"path": "missing-target.yaml"}]}, "matches no resource"),
    ({"resources": ["web.yaml", "web.yaml"]}, "declared twice"),
    ({"resources": ["web.yaml"], "replicas": [{"name": "nope", "count": 2}]}, "no workload"),
    ({"resources": ["web.yaml"], "labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]}, "only `pairs`"),
])
def test_what_is_not_supported_or_wrong_is_refused(tmp_path, fields, message):
    write(tmp_path, "web.yaml", DEPLOYMENT)
    write(tmp_path, "missing-target.yaml", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}})
    kustomization(tmp_path, **fields)
    with pytest.raises(kustomize.KustomizeError, match=message):
        kustomize.build(tmp_path)


def test_the_command_line_prints_the_objects(tmp_path, capsys):
    write(tmp_path, "web.yaml", DEPLOYMENT)
    kustomization(tmp_path, resources=["web.yaml"])
    assert kustomize.main([str(tmp_path)]) == 0
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == [DEPLOYMENT]
