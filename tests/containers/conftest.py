"""Container tests: the images `make images` built, run as Oakestra runs them, on a podman network each
module makes for itself (internal: no route out) and removes afterwards with everything it labelled.

They need podman and the images. Where those are missing they skip with the reason, unless
FLOPS_REQUIRE_CONTAINERS=1 (CI) makes that a failure.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from flops_operator.plan import images
from tests.oakestra_emulator.podman import Network, available, labelled, podman_sync, remove_labelled

REQUIRED = os.environ.get("FLOPS_REQUIRE_CONTAINERS") == "1"
OPERATOR_IMAGE = images.image("operator")
ALL_IMAGES = (*images.PLANNED, OPERATOR_IMAGE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(item.fspath).parent == here:
            item.add_marker(pytest.mark.containers)


def _unusable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (FLOPS_REQUIRE_CONTAINERS=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def built_images() -> tuple[str, ...]:
    why = available()
    if why:
        _unusable(why)
    missing = [image for image in ALL_IMAGES if podman_sync("image", "exists", image, check=False).code != 0]
    if missing:
        _unusable(f"images not built: {', '.join(missing)} (run `make images`)")
    return ALL_IMAGES


def free_subnet() -> str:
    """A /24 inside Oakestra's 10.30.0.0/16 that no podman network uses yet."""
    taken = set()
    for name in podman_sync("network", "ls", "--format", "{{.Name}}").out.split():
        for network in json.loads(podman_sync("network", "inspect", name).out):
            for subnet in network.get("subnets") or []:
                taken.add(ipaddress.ip_network(subnet["subnet"]))
    candidates = [f"10.30.{n}.0/24" for n in range(100, 250)]
    random.shuffle(candidates)
    for candidate in candidates:
        if not any(ipaddress.ip_network(candidate).overlaps(t) for t in taken):
            return candidate
    raise RuntimeError("no free /24 in 10.30.100.0-10.30.249.0 for a test network")


@dataclass
class Scene:
    """One module's network, the label on everything it creates, and where container logs go."""

    network: Network
    label: str
    log_dir: Path


@pytest.fixture(scope="module")
def scene(built_images, tmp_path_factory) -> Iterator[Scene]:
    run = uuid.uuid4().hex[:10]
    label = f"flops-test={run}"
    network = Network.create(f"flops-test-{run}", free_subnet(), {"flops-test": run})
    log_dir = tmp_path_factory.mktemp(f"containers-{run}")
    try:
        yield Scene(network, label, log_dir)
    finally:
        remove_labelled(label)
        network.remove()
        left = labelled(label)
        assert not left, f"left behind: {left}"


def serving_example(tracking_uri: str, name: str, alias: str, dst: Path,
                    login: tuple[str, str] | None = None) -> bytes:
    """The registered model's serving input example (the body /invocations takes), read through the
    tracking server (MLflow's process-wide tracking/registry settings stay untouched: other tests use them),
    with `login` (MLflow basic auth) if given."""
    import os

    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    if login is not None:
        os.environ.update(dict(zip(keys, login)))
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        version = client.get_model_version_by_alias(name, alias)
        location = client.get_model_version_download_uri(name, version.version)
        model_dir = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst),
                                                        tracking_uri=tracking_uri)
    finally:
        if login is not None:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return (Path(model_dir) / "serving_input_example.json").read_bytes()
