"""`flops-builder` end to end: the wine example served by a real Git server (git http-backend, Basic auth)
built onto small synthetic bases in a real registry (CNCF distribution, htpasswd), as the operator runs it (a
process with BuilderEnv's environment). What is checked is what the registry ends up holding: manifests,
configs, layer contents and which blobs a build added.

The synthetic bases (two small layers; the learner's an OCI index with an arm64 sibling, the aggregator's a
Docker schema 2 image) stand in for the FL images: nothing here runs an image (tests/containers does)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from flops_builder.contract import Bases, BuilderEnv, BuildSpec, SourceSpec
from flops_builder.results import parse
from tests.gitserver import GitServer, git_server  # noqa: F401  (fixture)
from tests.registry import (Registry, auth_registry, client_for, push_synthetic_base,  # noqa: F401  (fixtures)
                            registry, start_registry, tls_registry)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WINE = ROOT / "manifests" / "examples" / "tasks" / "wine"
BUILDER = Path(sys.executable).with_name("flops-builder")
BOUND = 300.0  # seconds a build may take before the test gives up (a bound against hangs)
JOKES = "pyjokes==0.8.3"


def wine_files(prefix: str = "tasks/wine", **changes: str | None) -> dict[str, str | None]:
    files: dict[str, str | None] = {f"{prefix}/{p.name}": p.read_text() for p in WINE.iterdir() if p.is_file()}
    files.update({f"{prefix}/{name}": text for name, text in changes.items()})
    return files


@dataclass
class Build:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def result(self) -> dict:
        parsed = parse(self.out)
        assert parsed is not None, f"no result line; stdout:\n{self.out}\nstderr:\n{self.err[-3000:]}"
        return parsed

    def step_lines(self, step: str) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith(f"flops-build: step={step} ")]


@dataclass
class Scene:
    registry: Registry
    git: GitServer
    learner: str
    aggregator: str
    workdir: Path

    def build(self, commit: str, *, path: str = "tasks/wine", entrypoint: str | None = None,
              tls_verify: bool = False, target: str | None = None, **secrets: str | None) -> Build:
        login = {"registry_username": self.registry.username, "registry_password": self.registry.password,
                 "git_username": self.git.username, "git_password": self.git.password}
        env = BuilderEnv(build=BuildSpec(source=SourceSpec(url=self.git.url("wine"), commit=commit, path=path),
                                         entrypoint=entrypoint,
                                         bases=Bases(learner=self.learner, aggregator=self.aggregator),
                                         target=target or f"{self.registry.host}/team/wine", tls_verify=tls_verify),
                         workdir=str(self.workdir), **{**login, **secrets})
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOPS_")}
        started = time.monotonic()
        done = subprocess.run([str(BUILDER)], env={**clean, **env.to_env()}, capture_output=True, text=True,
                              timeout=BOUND)
        return Build(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def make_scene(registry: Registry, git: GitServer, tmp_path: Path) -> Scene:
    learner = push_synthetic_base(registry, "flops/learner", workdir=tmp_path, oci_index=True)
    aggregator = push_synthetic_base(registry, "flops/aggregator", workdir=tmp_path)
    return Scene(registry, git, learner, aggregator, tmp_path / "work")


@pytest.fixture
def scene(auth_registry, git_server, tmp_path) -> Scene:
    return make_scene(auth_registry, git_server, tmp_path)


@pytest.fixture
def package_index() -> None:
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError as error:
        pytest.skip(f"the package index is not reachable from here: {error}")


# -- what the registry holds ---------------------------------------------------------------------------------
def manifest_and_config(registry: Registry, reference: str) -> tuple[dict, dict]:
    name, _, digest = reference.partition("@")
    repository = name.split("/", 1)[1].rsplit(":", 1)[0]
    repo = client_for(registry).repository(repository)
    manifest = repo.manifest(digest)
    assert manifest is not None and manifest.digest == digest
    body = manifest.json()
    return body, json.loads(repo.blob(body["config"]["digest"]))


def layer_names(registry: Registry, repository: str, digest: str) -> list[str]:
    blob = client_for(registry).repository(repository).blob(digest)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return tar.getnames()


def base_layers(registry: Registry, reference: str) -> list[str]:
    from flops_builder.images import read_base

    return [layer["digest"] for layer in read_base(client_for(registry), reference).manifest["layers"]]


def env_of(config: dict) -> dict[str, str]:
    return dict(v.split("=", 1) for v in config["config"]["Env"])


# -- tests ----------------------------------------------------------------------------------------------------
def test_code_layer_on_each_base_with_pythonpath_and_labels(scene):
    commit = scene.git.commit("wine", wine_files(), "wine")
    build = scene.build(commit)
    assert build.code == 0, build.out + build.err
    result = build.result
    assert result["ok"] and result["commit"] == commit and result["entrypoint"] == "wine_task:task"
    assert result["cache"] == {"images": "built", "deps": "none", "code": "built"}
    assert result["learner"].startswith(f"{scene.registry.host}/team/wine/learner:src-")
    for role, base in (("learner", scene.learner), ("aggregator", scene.aggregator)):
        manifest, config = manifest_and_config(scene.registry, result[role])
        inherited = base_layers(scene.registry, base)
        assert [layer["digest"] for layer in manifest["layers"]][:-1] == inherited  # the amd64 entry's layers
        assert len(manifest["layers"]) == len(inherited) + 1
        assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == len(config["history"])
        assert env_of(config)["PYTHONPATH"] == "/opt/flops/task"
        assert config["config"]["Entrypoint"] == ["flops-learner"] and config["config"]["User"] == "10001:10001"
        labels = config["config"]["Labels"]
        assert labels["io.flops.source.commit"] == commit and labels["io.flops.source.path"] == "tasks/wine"
        assert labels["io.flops.source.url"] == scene.git.url("wine") and labels["io.flops.source.tree"].startswith("sha256:")
        assert labels["io.flops.task.entrypoint"] == "wine_task:task"
        assert labels["org.opencontainers.image.title"].startswith("synthetic")  # the base's own labels stay
    code = manifest["layers"][-1]["digest"]
    assert layer_names(scene.registry, "team/wine/aggregator", code) == [
        "opt", "opt/flops", "opt/flops/task", "opt/flops/task/pyproject.toml", "opt/flops/task/requirements.txt",
        "opt/flops/task/wine_task.py"]
    assert [line.split()[1] for line in build.out.splitlines()[:-1]] == [
        "step=fetch", "step=source", "step=bases", "step=lookup", "step=deps", "step=check", "step=code",
        "step=push", "step=push"]
    assert scene.registry.password not in build.out + build.err and scene.git.password not in build.out + build.err


def test_dependencies_then_a_code_only_change_then_no_change(scene, package_index):
    first = scene.git.commit("wine", wine_files(**{"requirements.txt": f"{JOKES}\n"}), "wine with jokes")
    cold = scene.build(first)
    assert cold.code == 0, cold.out + cold.err
    assert cold.result["cache"] == {"images": "built", "deps": "built", "code": "built"}
    manifest, config = manifest_and_config(scene.registry, cold.result["learner"])
    deps, code = manifest["layers"][-2]["digest"], manifest["layers"][-1]["digest"]
    assert env_of(config)["PYTHONPATH"] == "/opt/flops/task:/opt/flops/deps"
    names = layer_names(scene.registry, "team/wine/learner", deps)
    assert "opt/flops/deps/pyjokes/__init__.py" in names and "opt/flops/deps/pyjokes-0.8.3.dist-info/METADATA" in names
    assert not [n for n in names if n.startswith("opt/flops/deps/numpy")]  # the base's packages stay the base's
    assert len(scene.registry.tags("team/wine/deps")) == 1

    blobs = scene.registry.blobs()
    second = scene.git.commit("wine", wine_files(**{"wine_task.py": (WINE / "wine_task.py").read_text()
                                                    + "\nEXTRA = 1  # one more line\n",
                                                    "requirements.txt": f"{JOKES}\n"}), "code only")
    warm = scene.build(second)
    assert warm.code == 0, warm.out + warm.err
    assert warm.result["cache"] == {"images": "built", "deps": "hit", "code": "built"}
    assert any("cache hit" in line for line in warm.step_lines("deps"))
    assert not any("installing" in line for line in warm.out.splitlines())
    new_manifest, _ = manifest_and_config(scene.registry, warm.result["learner"])
    layers = [layer["digest"] for layer in new_manifest["layers"]]
    assert layers[:-1] == [layer["digest"] for layer in manifest["layers"]][:-1] and layers[-2] == deps
    new_code = layers[-1]
    assert new_code != code
    added = scene.registry.blobs() - blobs
    # The new code layer, and per image a config and a manifest (distribution keeps manifests as blobs too).
    assert new_code in added and len(added) == 1 + 2 + 2

    blobs = scene.registry.blobs()
    outside = scene.git.commit("wine", {"README.md": "outside the task's folder\n"}, "docs")
    again = scene.build(outside)
    assert again.code == 0, again.out + again.err
    assert again.result["cache"] == {"images": "hit", "deps": "hit", "code": "hit"}
    assert again.result["learner"] == warm.result["learner"] and again.result["commit"] == outside
    assert scene.registry.blobs() == blobs  # a lookup only: nothing uploaded
    assert [line.split()[1] for line in again.out.splitlines()[:-1]] == [
        "step=fetch", "step=source", "step=bases", "step=lookup"]


def test_a_fresh_builder_reuses_the_registrys_dependency_layer(scene, package_index, tmp_path):
    first = scene.git.commit("wine", wine_files(**{"requirements.txt": f"{JOKES}\n"}), "wine with jokes")
    assert scene.build(first).code == 0
    scene.workdir = tmp_path / "another-builder"  # no environment cache: only the registry's deps:<key>
    second = scene.git.commit("wine", wine_files(**{"requirements.txt": f"{JOKES}\n", "extra.py": "X = 1\n"}))
    build = scene.build(second)
    assert build.code == 0, build.out + build.err
    assert build.result["cache"]["deps"] == "hit"
    assert not any("installing" in line for line in build.out.splitlines())


def test_wrong_registry_password_is_refused_at_once(scene):
    commit = scene.git.commit("wine", wine_files())
    build = scene.build(commit, registry_password="not-the-password")
    assert build.code == 1
    result = build.result
    assert result["ok"] is False and result["step"] in ("registry", "push")
    assert "refused the login of user 'flops'" in result["message"] and scene.registry.host in result["message"]
    assert build.seconds < 30  # not retried
    assert "not-the-password" not in build.out + build.err


def test_a_registry_that_refuses_pushes(git_server, tmp_path):
    storage = tmp_path / "shared"
    writable = start_registry(tmp_path / "rw", auth=("flops", "pw-rw-123"), storage=storage)
    try:
        scene = make_scene(writable, git_server, tmp_path)
    finally:
        writable.stop()
    read_only = start_registry(tmp_path / "ro", auth=("flops", "pw-rw-123"), storage=storage, read_only=True)
    try:
        scene.registry = read_only
        scene.learner = scene.learner.replace(writable.host, read_only.host)
        scene.aggregator = scene.aggregator.replace(writable.host, read_only.host)
        build = scene.build(git_server.commit("wine", wine_files()))
    finally:
        read_only.stop()
    assert build.code == 1
    assert build.result["step"] == "push" and "team/wine" in build.result["message"], build.result


def test_tls_registry_with_its_ca_given(tls_registry, git_server, tmp_path):
    scene = make_scene(tls_registry, git_server, tmp_path)
    commit = git_server.commit("wine", wine_files())
    build = scene.build(commit, tls_verify=True, registry_ca=tls_registry.ca_file.read_text())
    assert build.code == 0, build.out + build.err
    assert build.result["learner"].startswith(f"{tls_registry.host}/team/wine/learner:")


def test_tls_registry_without_its_ca_fails_naming_the_remedy(tls_registry, git_server, tmp_path):
    scene = make_scene(tls_registry, git_server, tmp_path)
    build = scene.build(git_server.commit("wine", wine_files()), tls_verify=True)
    assert build.code == 1
    assert build.result["step"] == "registry" and "TLS" in build.result["message"]
    assert "FLOPS_REGISTRY_CA" in build.result["message"] and build.seconds < 60


def test_tls_registry_marked_insecure(tls_registry, git_server, tmp_path):
    scene = make_scene(tls_registry, git_server, tmp_path)
    build = scene.build(git_server.commit("wine", wine_files()), tls_verify=False)
    assert build.code == 0, build.out + build.err


def test_bases_on_another_registry_are_copied(registry, auth_registry, git_server, tmp_path):
    bases = make_scene(registry, git_server, tmp_path / "bases")  # anonymous, read by the builder as it is
    scene = Scene(auth_registry, git_server, bases.learner, bases.aggregator, tmp_path / "work")
    build = scene.build(git_server.commit("wine", wine_files()))
    assert build.code == 0, build.out + build.err
    assert "2 copied" in build.step_lines("push")[0]
    manifest, _ = manifest_and_config(auth_registry, build.result["learner"])
    assert set(base_layers(registry, bases.learner)) <= auth_registry.blobs()
    assert len(manifest["layers"]) == 3


@pytest.mark.parametrize("files, entrypoint, step, field, words", [
    ({"tasks/wine/pyproject.toml": None}, None, "entrypoint", "spec.task.entrypoint", ["no entrypoint"]),
    ({}, "wine_task:no_such_task", "check", "spec.task.entrypoint", ["no_such_task"]),
    ({"tasks/wine/wine_task.py": "raise RuntimeError('broken on purpose')\n"}, None, "check", "spec.task.entrypoint",
     ["broken on purpose"]),
    ({"tasks/wine/requirements.txt": "-r other.txt\n"}, None, "requirements", "requirements.txt", ["-r other.txt"]),
])
def test_bad_sources_fail_naming_the_step_and_field(scene, files, entrypoint, step, field, words):
    commit = scene.git.commit("wine", {**wine_files(), **files})
    build = scene.build(commit, entrypoint=entrypoint)
    assert build.code == 1, build.out
    result = build.result
    assert (result["step"], result["field"]) == (step, field), result
    assert all(word in result["message"] for word in words), result["message"]
    assert not scene.registry.tags("team/wine/learner")  # nothing pushed


def test_missing_path_and_wrong_git_password(scene):
    commit = scene.git.commit("wine", wine_files())
    build = scene.build(commit, path="tasks/beer")
    assert (build.code, build.result["step"], build.result["field"]) == (1, "path", "spec.task.source.git.path")
    build = scene.build(commit, git_password="wrong-git-password")
    assert build.code == 1 and build.result["step"] == "fetch"
    assert "wrong-git-password" not in build.out + build.err


def test_an_invalid_environment_exits_2(tmp_path):
    done = subprocess.run([str(BUILDER)], env={"PATH": os.environ["PATH"], "FLOPS_BUILD": '{"source": {}}',
                                               "FLOPS_WORKDIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=BOUND)
    assert done.returncode == 2
    assert parse(done.stdout)["step"] == "resolve" and "FLOPS_BUILD" in done.stdout
