"""tests/support/kustomize.py: finding kustomize, rendering, and the kubelet's environment rules.

The rendering tests build small kustomizations that use each kustomize feature deploy/
relies on (components, generators merged by a component, hashed names rewritten in
references, ``$patch: delete``, ``replicas``, ``namespace``), so an old or different
kustomize fails here, by feature, rather than somewhere in the manifest tests.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.kustomize import (
    Kustomize,
    KustomizeError,
    KustomizeUnavailable,
    container_environment,
    expand,
    find_kustomize,
    find_object,
    parse_documents,
    require_kustomize,
)


@pytest.fixture(scope="module")
def kz() -> Kustomize:
    return require_kustomize()


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


_BASE = {
    "base/kustomization.yaml": """
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources: [deployment.yaml, pdb.yaml]
        configMapGenerator:
          - name: settings
            literals: [SCHEME=http, LEVEL=info]
    """,
    "base/deployment.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 3
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers:
                - name: main
                  image: example/web:1
                  envFrom: [{configMapRef: {name: settings}}]
                  env:
                    - {name: FIRST, value: one}
                    - {name: URL, value: "$(SCHEME)://$(FIRST)"}
                    - name: TOKEN
                      valueFrom: {secretKeyRef: {name: token, key: token}}
    """,
    "base/pdb.yaml": """
        apiVersion: policy/v1
        kind: PodDisruptionBudget
        metadata: {name: web}
        spec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}
    """,
    "tls/kustomization.yaml": """
        apiVersion: kustomize.config.k8s.io/v1alpha1
        kind: Component
        configMapGenerator:
          - name: settings
            behavior: merge
            literals: [SCHEME=https]
    """,
    "overlay/kustomization.yaml": """
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        namespace: demo
        resources: [../base]
        components: [../tls]
        replicas: [{name: web, count: 1}]
        secretGenerator:
          - name: token
            literals: [token=abc]
        patches:
          - patch: |-
              $patch: delete
              apiVersion: policy/v1
              kind: PodDisruptionBudget
              metadata: {name: web}
    """,
}


# -- finding kustomize -----------------------------------------------------------------------


def test_found_kustomize_is_recent_enough(kz: Kustomize) -> None:
    assert kz.version >= (5, 0, 0)
    assert kz.argv[-1] in {"build", "kustomize"}


def test_nothing_on_path_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUSTOMIZE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    with pytest.raises(KustomizeUnavailable, match=r"kustomize: not on PATH.*kubectl: not on PATH"):
        find_kustomize()


def test_too_old_is_refused(kz: Kustomize) -> None:
    with pytest.raises(KustomizeUnavailable, match="too old"):
        find_kustomize(min_version=(kz.version[0] + 1, 0, 0))


# -- rendering ---------------------------------------------------------------------------------


def test_overlay_renders_every_feature_deploy_uses(kz: Kustomize, tmp_path: Path) -> None:
    objects = kz.build(_write(tmp_path, _BASE) / "overlay")

    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["ConfigMap", "Deployment", "Secret"]  # the PDB was deleted
    assert {obj["metadata"]["namespace"] for obj in objects} == {"demo"}
    settings = find_object(objects, "ConfigMap", "settings")
    assert settings["data"] == {"SCHEME": "https", "LEVEL": "info"}  # merged by the component
    deployment = find_object(objects, "Deployment", "web")
    assert deployment["spec"]["replicas"] == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # Generated names carry a content hash, and references follow them.
    assert container["envFrom"][0]["configMapRef"]["name"] == settings["metadata"]["name"]
    assert settings["metadata"]["name"] != "settings"
    secret = find_object(objects, "Secret", "token")
    token_ref = container["env"][2]["valueFrom"]["secretKeyRef"]
    assert token_ref["name"] == secret["metadata"]["name"] != "token"

    env = container_environment(container, objects, {})
    assert env.values["URL"] == "https://one"
    assert env.values["TOKEN"] == "abc"
    assert env.undefined == [] and env.missing == []


def test_build_failure_raises_with_kustomize_message(kz: Kustomize, tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "kustomization.yaml": """
                apiVersion: kustomize.config.k8s.io/v1beta1
                kind: Kustomization
                resources: [missing.yaml]
            """
        },
    )
    with pytest.raises(KustomizeError, match=r"missing\.yaml"):
        kz.build(tmp_path)


def test_unknown_kustomization_field_is_an_error(kz: Kustomize, tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "kustomization.yaml": """
                apiVersion: kustomize.config.k8s.io/v1beta1
                kind: Kustomization
                resourcez: []
            """
        },
    )
    with pytest.raises(KustomizeError):
        kz.build(tmp_path)


# -- parsing -----------------------------------------------------------------------------------


def test_parse_documents_skips_empty_documents() -> None:
    text = "---\nkind: A\nmetadata: {name: a}\n---\n---\nkind: B\nmetadata: {name: b}\n"
    assert [obj["kind"] for obj in parse_documents(text)] == ["A", "B"]


def test_parse_documents_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes object"):
        parse_documents("- just\n- a list\n")


def test_find_object_ignores_a_generated_hash_but_not_other_suffixes() -> None:
    objects: list[dict[str, Any]] = [
        {"kind": "ConfigMap", "metadata": {"name": "settings-7chtb8h9kk"}},
        {"kind": "ConfigMap", "metadata": {"name": "settings-extra"}},
    ]
    assert find_object(objects, "ConfigMap", "settings")["metadata"]["name"].endswith("9kk")
    with pytest.raises(LookupError):
        find_object(objects, "Secret", "settings")


# -- the kubelet's environment rules -----------------------------------------------------------


def test_expand_follows_kubernetes_rules() -> None:
    defined = {"A": "x", "B": "y"}
    assert expand("$(A)-$(B)", defined) == ("x-y", [])
    assert expand("$$(A) costs $5", defined) == ("$(A) costs $5", [])
    assert expand("$(C):7070", defined) == ("$(C):7070", ["C"])


def test_references_see_only_earlier_variables() -> None:
    container = {
        "env": [
            {"name": "URL", "value": "$(HOST):80"},  # HOST comes later: stays unexpanded
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "ADDR", "value": "$(HOST):80"},
        ]
    }
    env = container_environment(container, [], {"status.podIP": "10.1.2.3"})
    assert env.values == {"URL": "$(HOST):80", "HOST": "10.1.2.3", "ADDR": "10.1.2.3:80"}
    assert env.undefined == [("URL", "HOST")]


def test_env_from_comes_first_and_env_overrides_it() -> None:
    objects = [
        {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"MODE": "a", "S": "https"}},
    ]
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}}],
        "env": [{"name": "URL", "value": "$(S)://h"}, {"name": "MODE", "value": "b"}],
    }
    env = container_environment(container, objects, {})
    assert env.values == {"MODE": "b", "S": "https", "URL": "https://h"}


def test_missing_sources_are_reported_with_placeholders() -> None:
    container = {
        "envFrom": [{"secretRef": {"name": "absent"}}],
        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "rpc", "key": "token"}}}],
    }
    env = container_environment(container, [], {})
    assert env.missing == ["Secret/absent", "Secret/rpc/token"]
    assert env.values == {"T": "<Secret/rpc/token>"}


def test_secret_data_is_decoded() -> None:
    objects = [{"kind": "Secret", "metadata": {"name": "rpc"}, "data": {"token": "c2VjcmV0"}}]
    container = {
        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "rpc", "key": "token"}}}]
    }
    assert container_environment(container, objects, {}).values == {"T": "secret"}
