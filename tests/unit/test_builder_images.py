"""How an image is extended: config, manifest, platform choice and tag, as pure functions."""

from __future__ import annotations

import json

import pytest

from flops_builder.errors import BuildError
from flops_builder.images import (CONFIG_MEDIA_TYPES, FORMAT, LAYER_MEDIA_TYPES, NewLayer, env_value,
                                  extended_config, extended_manifest, image_tag, layer_config, pick_platform,
                                  python_path)
from flops_builder.registry import OCI_MANIFEST, SCHEMA2_MANIFEST, sha256

D = {n: f"sha256:{n * 64}" for n in "abcdef"}
DEPS = NewLayer(D["a"], D["b"], 100, "deps")
CODE = NewLayer(D["c"], D["d"], 10, "code")
BASE_CONFIG = {
    "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/usr/bin", "PYTHONPATH=/old"], "Entrypoint": ["flops-learner"], "User": "10001:10001",
               "Labels": {"org.opencontainers.image.title": "flops learner"}},
    "rootfs": {"type": "layers", "diff_ids": [D["e"]]},
    "history": [{"created_by": "base"}],
}


def test_config_gets_layers_history_env_and_labels():
    out = extended_config(BASE_CONFIG, [DEPS, CODE], {"PYTHONPATH": "/opt/flops/task:/opt/flops/deps"},
                          {"io.flops.source.commit": "abc"})
    assert out["rootfs"]["diff_ids"] == [D["e"], D["b"], D["d"]]
    assert [h["created_by"] for h in out["history"]] == ["base", "deps", "code"]
    assert out["config"]["Env"] == ["PATH=/usr/bin", "PYTHONPATH=/opt/flops/task:/opt/flops/deps"]
    assert out["config"]["Labels"] == {"org.opencontainers.image.title": "flops learner", "io.flops.source.commit": "abc"}
    assert out["config"]["Entrypoint"] == ["flops-learner"] and out["config"]["User"] == "10001:10001"
    assert out["created"] == BASE_CONFIG["created"]  # nothing of this moment: the same inputs, the same image
    assert BASE_CONFIG["rootfs"]["diff_ids"] == [D["e"]]  # the base's config is left as it was


def test_config_without_env_labels_or_history():
    out = extended_config({"architecture": "amd64", "os": "linux", "config": None,
                           "rootfs": {"type": "layers", "diff_ids": []}}, [CODE], {"PYTHONPATH": "/t"}, {"k": "v"})
    assert out["config"] == {"Env": ["PYTHONPATH=/t"], "Labels": {"k": "v"}}
    assert out["history"] == [{"created_by": "code", "comment": FORMAT}]


@pytest.mark.parametrize("kind", [SCHEMA2_MANIFEST, OCI_MANIFEST])
def test_manifest_appends_layers_of_the_bases_kind(kind):
    base = {"schemaVersion": 2, "mediaType": kind,
            "config": {"mediaType": CONFIG_MEDIA_TYPES[kind], "digest": D["f"], "size": 5},
            "layers": [{"mediaType": LAYER_MEDIA_TYPES[kind], "digest": D["e"], "size": 7}]}
    config = b'{"new": "config"}'
    out = extended_manifest(base, config, [DEPS, CODE])
    assert out["mediaType"] == kind
    assert out["config"] == {"mediaType": CONFIG_MEDIA_TYPES[kind], "digest": sha256(config), "size": len(config)}
    assert [(layer["digest"], layer["size"], layer["mediaType"]) for layer in out["layers"]] == [
        (D["e"], 7, LAYER_MEDIA_TYPES[kind]), (D["a"], 100, LAYER_MEDIA_TYPES[kind]),
        (D["c"], 10, LAYER_MEDIA_TYPES[kind])]
    assert len(base["layers"]) == 1


INDEX = {"manifests": [
    {"digest": D["a"], "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    {"digest": D["b"], "platform": {"os": "linux", "architecture": "amd64"}},
    {"digest": D["c"], "platform": {"os": "windows", "architecture": "amd64"}},
    {"digest": D["d"], "platform": {"os": "unknown", "architecture": "unknown"}},  # an attestation
]}


@pytest.mark.parametrize("os_name, architecture, digest", [
    ("linux", "amd64", D["b"]),
    ("linux", "arm64", D["a"]),
    ("windows", "amd64", D["c"]),
])
def test_platform_is_picked_from_a_list(os_name, architecture, digest):
    assert pick_platform(INDEX, os_name, architecture)["digest"] == digest


def test_a_list_without_the_platform_names_what_it_has():
    with pytest.raises(BuildError) as error:
        pick_platform(INDEX, "linux", "riscv64")
    assert error.value.step == "registry"
    assert "linux/riscv64" in error.value.message and "linux/arm64" in error.value.message


def test_tag_is_a_function_of_tree_entrypoint_and_bases():
    tag = image_tag(D["a"], "wine_task:task", [D["b"], D["c"]])
    assert tag == image_tag(D["a"], "wine_task:task", [D["b"], D["c"]])
    assert tag.startswith("src-") and len(tag) == 28
    others = {image_tag(D["f"], "wine_task:task", [D["b"], D["c"]]), image_tag(D["a"], "wine_task:other", [D["b"], D["c"]]),
              image_tag(D["a"], "wine_task:task", [D["e"], D["c"]]), image_tag(D["a"], "wine_task:task", [D["b"], D["e"]])}
    assert tag not in others and len(others) == 4


@pytest.mark.parametrize("has_deps, existing, expected", [
    (True, None, "/opt/flops/task:/opt/flops/deps"),
    (False, None, "/opt/flops/task"),
    (True, "/usr/lib/extra", "/opt/flops/task:/opt/flops/deps:/usr/lib/extra"),
])
def test_python_path(has_deps, existing, expected):
    assert python_path(has_deps, existing) == expected


def test_env_value():
    assert env_value(BASE_CONFIG, "PYTHONPATH") == "/old"
    assert env_value(BASE_CONFIG, "HOME") is None
    assert env_value({"config": None}, "PATH") is None


def test_a_dependency_layer_is_kept_as_a_one_layer_image():
    config = layer_config(DEPS, {"io.flops.deps.key": "k"}, ("linux", "amd64"))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [D["b"]]}
    assert config["config"]["Labels"] == {"io.flops.deps.key": "k"}
    assert json.loads(json.dumps(config)) == config
