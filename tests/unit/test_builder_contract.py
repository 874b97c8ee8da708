"""The builder's environment: what the operator renders parses back, and what is wrong is named."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flops_builder.contract import (ENV_BUILD, ENV_GIT_PASSWORD, ENV_REGISTRY_CA, ENV_REGISTRY_PASSWORD,
                                    ENV_REGISTRY_USERNAME, ENV_WORKDIR, Bases, BuilderEnv, BuildSpec, SourceSpec)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
BUILD = {"source": {"url": "https://git.example.com/team/wine.git", "commit": COMMIT, "path": "tasks/wine"},
         "entrypoint": "wine_task:task",
         "bases": {"learner": "registry.example.com/flops/learner:0.1.0",
                   "aggregator": "registry.example.com/flops/aggregator:0.1.0"},
         "target": "registry.example.com/team/wine", "tlsVerify": True}


def env(**changes) -> dict[str, str]:
    build = json.loads(json.dumps(BUILD))
    for path, value in changes.items():
        node = build
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return {ENV_BUILD: json.dumps(build), ENV_WORKDIR: "/var/lib/flops"}


def test_round_trip_with_secrets_kept_out_of_the_build_json():
    built = BuilderEnv(build=BuildSpec.model_validate(BUILD), workdir="/w", git_password="gp",
                       registry_username="u", registry_password="rp", registry_ca="PEM")
    rendered = built.to_env()
    assert BuilderEnv.from_env(rendered) == built
    assert rendered[ENV_GIT_PASSWORD] == "gp" and rendered[ENV_REGISTRY_PASSWORD] == "rp"
    assert rendered[ENV_REGISTRY_USERNAME] == "u" and rendered[ENV_REGISTRY_CA] == "PEM"
    assert "gp" not in rendered[ENV_BUILD] and "rp" not in rendered[ENV_BUILD]
    assert json.loads(rendered[ENV_BUILD])["tlsVerify"] is True  # camelCase on the wire
    assert "rp" not in repr(built) and "gp" not in repr(built)


def test_unset_and_empty_secrets_are_absent():
    built = BuilderEnv.from_env({**env(), ENV_GIT_PASSWORD: ""})
    assert built.git_password is None and built.registry_password is None
    assert set(built.to_env()) == {ENV_BUILD, ENV_WORKDIR}


def test_defaults():
    build = BuildSpec.model_validate({**BUILD, "entrypoint": None, "tlsVerify": True,
                                      "source": {"url": "ssh://git@host/x.git", "commit": COMMIT}})
    assert build.source.path == "" and build.entrypoint is None and build.tls_verify


@pytest.mark.parametrize("path, value, field", [
    ("source.commit", "main", "commit"),
    ("source.commit", COMMIT[:12], "commit"),
    ("source.commit", COMMIT.upper(), "commit"),
    ("source.path", "../outside", "path"),
    ("source.path", "/abs", "path"),
    ("source.url", "https://user:token@git.example.com/x.git", "url"),
    ("entrypoint", "wine_task", "entrypoint"),
    ("entrypoint", "wine-task:task", "entrypoint"),
    ("target", "team/wine", "target"),                   # no registry host
    ("target", "registry.example.com", "target"),        # no repository
    ("target", "registry.example.com/Team", "target"),   # upper case
    ("bases.learner", "flops/learner:0.1.0", "learner"),
    ("bases.learner", "registry.example.com/flops/learner", "learner"),  # neither tag nor digest
])
def test_invalid_builds_name_the_field(path, value, field):
    with pytest.raises(ValidationError) as error:
        BuilderEnv.from_env(env(**{path: value}))
    assert field in str(error.value)


@pytest.mark.parametrize("path, value, expected", [
    ("source.path", "./tasks/wine/", "tasks/wine"),
    ("source.path", ".", ""),
    ("target", "localhost:5000/team/wine/", "localhost:5000/team/wine"),
    ("bases.learner", "127.0.0.1:5000/flops/learner@sha256:" + "0" * 64, None),
    ("source.commit", "a" * 64, None),                   # a SHA-256 repository
    ("source.url", "git@github.com:team/wine.git", None),
])
def test_valid_forms(path, value, expected):
    built = BuilderEnv.from_env(env(**{path: value}))
    node = built.build
    for key in path.split("."):
        node = getattr(node, {"tlsVerify": "tls_verify"}.get(key, key))
    assert node == (value if expected is None else expected)


def test_missing_build_is_named():
    with pytest.raises(ValueError, match=ENV_BUILD):
        BuilderEnv.from_env({ENV_WORKDIR: "/w"})


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError, match="extra"):
        BuilderEnv.from_env({ENV_BUILD: json.dumps({**BUILD, "push": True}), ENV_WORKDIR: "/w"})


def test_models_are_importable_without_the_builders_dependencies():
    # The operator imports the contract: pydantic only (no dxf, requests, git).
    import subprocess
    import sys

    code = ("import sys; import flops_builder.contract; "
            "bad = [m for m in ('dxf', 'requests', 'flops_builder.registry') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
    assert Bases and SourceSpec
