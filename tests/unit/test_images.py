"""The aggregator and learner Dockerfiles cannot be built here: check that what they run exists and works."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "aggregator_image": ("flops-aggregator", ["FLOPS_CONFIG", "FLOPS_SUPERLINK_ADDRESS", "FLOPS_WORKDIR",
                                              "MLFLOW_TRACKING_URI"]),
    "learner_image": ("flops-learner", ["FLOPS_TASK", "FLOPS_SUPERLINK", "FLOPS_PARTITION_ID", "FLOPS_NUM_PARTITIONS",
                                        "FLOPS_CLIENTAPPIO_ADDRESS", "FLOPS_WORKDIR", "FLOPS_MAX_WAIT_SECONDS"]),
}


def instructions(folder: str) -> dict[str, list[str]]:
    text = (ROOT / folder / "Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.setdefault(keyword.upper(), []).append(rest.strip())
    return out


@pytest.mark.parametrize("folder", IMAGES)
def test_dockerfile_entrypoint_is_the_console_script_and_its_module_imports(folder):
    script, _ = IMAGES[folder]
    docker = instructions(folder)
    (entrypoint,) = docker["ENTRYPOINT"]
    assert json.loads(entrypoint)[0] == script
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][script]
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("folder", IMAGES)
def test_dockerfile_base_user_torch_and_healthcheck(folder):
    docker = instructions(folder)
    assert docker["FROM"] == ["python:3.11-slim"]
    assert any(re.search(r"download\.pytorch\.org/whl/cpu torch==2\.13\.0", run) for run in docker["RUN"])
    (user,) = docker["USER"]
    assert not user.startswith(("root", "0:", "0 ")) and user != "0"
    (healthcheck,) = docker["HEALTHCHECK"]
    probe = json.loads(healthcheck[healthcheck.index("CMD") + 3:].strip())
    # The probe's code must run in this environment too (it only imports our package).
    code = probe[probe.index("-c") + 1]
    compile(code, "<healthcheck>", "exec")
    assert "flops_learner.proc" in code and importlib.import_module("flops_learner.proc").reachable


@pytest.mark.parametrize("folder", IMAGES)
def test_cli_help_documents_every_setting(folder):
    script, env_vars = IMAGES[folder]
    done = subprocess.run([str(Path(sys.executable).parent / script), "--help"], capture_output=True, text=True,
                          timeout=120, env={"PATH": str(Path(sys.executable).parent), "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    for var in env_vars:
        assert var in done.stdout, var
        assert var in (ROOT / folder / "README.md").read_text(), var


def test_invalid_settings_fail_fast_with_non_zero_exit(tmp_path):
    bin_dir = Path(sys.executable).parent
    aggregator = subprocess.run([str(bin_dir / "flops-aggregator"), "--config", '{"task": {"name": "nope"}}',
                                 "--workdir", str(tmp_path / "a")], capture_output=True, text=True, timeout=120)
    assert aggregator.returncode == 2, aggregator.stderr
    learner = subprocess.run([str(bin_dir / "flops-learner"), "--task", '{"task": {"name": "digits-mlp"}, "data": {}}',
                              "--superlink", "127.0.0.1:1", "--partition-id", "3", "--num-partitions", "2",
                              "--workdir", str(tmp_path / "l")], capture_output=True, text=True, timeout=120)
    assert learner.returncode == 1, learner.stderr
    assert "partition id 3" in learner.stderr
