"""The builder image, run as an unprivileged container (no capabilities, no new privileges, no devices, user
10001), builds the wine example from a Git server onto the real learner and aggregator images in a real registry
(distribution) and pushes them; the learner image it made is then pulled and imports the task from its layers.

The container uses the host's network (--network host) to reach the Git server and the registry on loopback;
its privileges are none the more for it."""

from __future__ import annotations

import json
import secrets
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from flops_builder.contract import Bases, BuilderEnv, BuildSpec, SourceSpec
from flops_builder.results import parse
from flops_operator.plan import images
from tests.gitserver import GitServer
from tests.oakestra_emulator.podman import available, podman_sync, remove_labelled
from tests.registry import RealBases, real_bases  # noqa: F401  (fixture)

from .conftest import _unusable

ROOT = Path(__file__).resolve().parents[2]
WINE = ROOT / "manifests" / "examples" / "tasks" / "wine"
BUILDER_IMAGE = images.image("builder")
BOUND = 600.0
UNPRIVILEGED = ["--cap-drop=all", "--security-opt", "no-new-privileges", "--user", "10001:10001"]


@pytest.fixture(scope="module")
def builder_image() -> str:
    why = available()
    if why:
        _unusable(why)
    if podman_sync("image", "exists", BUILDER_IMAGE, check=False).code != 0:
        _unusable(f"image not built: {BUILDER_IMAGE} (run `make images`)")
    return BUILDER_IMAGE


@pytest.fixture
def label() -> Iterator[str]:
    value = f"flops-test={uuid.uuid4().hex[:10]}"
    yield value
    remove_labelled(value)


def run_builder(label: str, env: dict[str, str]) -> tuple[int, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:  # 0600: it holds the logins
        env_file.write("".join(f"{k}={v}\n" for k, v in env.items()))
        env_file.flush()
        name = f"builder-{label.split('=')[1]}-{uuid.uuid4().hex[:4]}"
        done = podman_sync("run", "--name", name, "--label", label, "--network", "host", *UNPRIVILEGED,
                           "--env-file", env_file.name, BUILDER_IMAGE, check=False, timeout=BOUND)
    inspected = json.loads(podman_sync("inspect", name).out)[0]
    host = inspected["HostConfig"]
    assert not host.get("Privileged") and not host.get("Devices") and inspected["Config"]["User"] == "10001:10001"
    assert set(host.get("CapDrop") or []) >= {"CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_NET_RAW"} or host.get("CapAdd") == []
    podman_sync("rm", "-f", name, check=False)
    return done.code, done.out + done.err


def build_env(git: GitServer, commit: str, bases: RealBases) -> BuilderEnv:
    return BuilderEnv(
        build=BuildSpec(source=SourceSpec(url=git.url("wine"), commit=commit, path="tasks/wine"),
                        bases=Bases(learner=bases.learner, aggregator=bases.aggregator),
                        target=f"{bases.registry.host}/team/wine", tls_verify=False),
        workdir="/var/lib/flops", git_username=git.username, git_password=git.password,
        registry_username=bases.registry.username, registry_password=bases.registry.password)


def run_in(image: str, label: str, registry, code: str) -> str:
    """`python3 -c code` in `image` (pulled from the test registry first), unprivileged and offline."""
    podman_sync("pull", "--quiet", "--tls-verify=false", "--creds", f"{registry.username}:{registry.password}",
                image, timeout=BOUND)
    done = podman_sync("run", "--rm", "--label", label, "--network", "none", *UNPRIVILEGED,
                       "--entrypoint", "python3", image, "-c", code, timeout=BOUND, check=False)
    assert done.code == 0, done.out + done.err
    return done.out


def test_builder_image_builds_and_pushes_images_that_import_the_task(builder_image, real_bases: RealBases, label,
                                                                      tmp_path):
    registry = real_bases.registry
    with GitServer(tmp_path / "git", username="flops", password=secrets.token_urlsafe(12)) as git:
        files = {f"tasks/wine/{p.name}": p.read_text() for p in WINE.iterdir() if p.is_file()}
        commit = git.commit("wine", files, "the wine example")
        env = build_env(git, commit, real_bases)
        started = time.monotonic()
        code, logs = run_builder(label, env.to_env())
        seconds = time.monotonic() - started
        assert code == 0, logs[-4000:]
        result = parse(logs)
        assert result and result["ok"], logs[-4000:]
        print(f"\nbuilder container: cold build onto the real bases in {seconds:.1f}s "
              f"(bases into the registry: {real_bases.seconds:.1f}s)\n" + logs)
        assert result["cache"] == {"images": "built", "deps": "none", "code": "built"}
        assert "mounted" in logs and " 0 copied" in logs  # the bases' layers were mounted, not copied
        assert registry.password not in logs and git.password not in logs

        # Unchanged source: the registry lookup only.
        code, again = run_builder(label, env.to_env())
        assert code == 0 and parse(again)["cache"]["images"] == "hit", again[-3000:]

    pulled = result["learner"]
    try:
        probe = ("from flops_learner.loading import load_task; import os; "
                 f"task = load_task({{'entrypoint': {result['entrypoint']!r}}}); "
                 "print(type(task).__name__, os.environ['PYTHONPATH'])")
        out = run_in(pulled, label, registry, probe)
        assert out.split() == ["SklearnTask", "/opt/flops/task"], out
        labels = json.loads(podman_sync("image", "inspect", pulled).out)[0]["Labels"]
        assert labels["io.flops.source.commit"] == commit
        assert labels["org.opencontainers.image.title"] == "flops learner"
    finally:
        podman_sync("rmi", "-f", pulled, check=False)


def test_builder_image_installs_requirements_unprivileged(builder_image, real_bases: RealBases, label, tmp_path):
    """pip in the builder container (user 10001, no capabilities) installs a requirement the bases lack into the
    dependency layer; the built aggregator imports it from /opt/flops/deps and the bases' numpy from the base."""
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError as error:
        pytest.skip(f"the package index is not reachable from here: {error}")
    with GitServer(tmp_path / "git", username="flops", password=secrets.token_urlsafe(12)) as git:
        files = {f"tasks/wine/{p.name}": p.read_text() for p in WINE.iterdir() if p.is_file()}
        files["tasks/wine/requirements.txt"] = "numpy\npyjokes==0.8.3\n"
        code, logs = run_builder(label, build_env(git, git.commit("wine", files, "with jokes"), real_bases).to_env())
    assert code == 0, logs[-4000:]
    result = parse(logs)
    assert result["cache"]["deps"] == "built", logs[-3000:]
    assert "installed pyjokes==0.8.3; already installed: numpy" in logs
    pulled = result["aggregator"]
    try:
        out = run_in(pulled, label, real_bases.registry,
                     "import numpy, pyjokes; print(pyjokes.__file__); print(numpy.__file__)").split()
        assert out[0].startswith("/opt/flops/deps/pyjokes/") and not out[1].startswith("/opt/flops"), out
    finally:
        podman_sync("rmi", "-f", pulled, check=False)
