"""The two Python entrypoints as processes: their --help documents every setting of their contract, and
a bad setting fails fast with the documented exit code (the images' smoke tests run them in containers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flops_aggregator import contract as aggregator_contract
from flops_learner import contract as learner_contract
from flops_aggregator.contract import AggregatorEnv
from flops_operator.plan.desired import aggregator_config, learner_env
from flops_runtime import pki
from tests.projects import LoopbackPki, project

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def env_names(module) -> list[str]:
    return [value for key, value in vars(module).items() if key.startswith("ENV_")]


@pytest.mark.parametrize("folder, script, contract", [
    ("aggregator_image", "flops-aggregator", aggregator_contract),
    ("learner_image", "flops-learner", learner_contract),
])
def test_help_and_readme_document_every_setting_of_the_contract(folder, script, contract):
    done = subprocess.run([str(BIN / script), "--help"], capture_output=True, text=True, timeout=120,
                          env={"PATH": str(BIN), "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    readme = (ROOT / folder / "README.md").read_text()
    names = env_names(contract)
    assert len(names) >= 4
    for var in names:
        assert var in readme, var
        if var != "MLFLOW_TRACKING_URI" or script == "flops-aggregator":
            assert var in done.stdout, var


def test_invalid_settings_fail_fast_with_their_exit_codes(tmp_path):
    aggregator = subprocess.run([str(BIN / "flops-aggregator"), "--config", '{"task": {"name": "nope"}}',
                                 "--workdir", str(tmp_path / "a")], capture_output=True, text=True, timeout=120)
    assert aggregator.returncode == 2, aggregator.stderr
    assert "invalid aggregator configuration" in aggregator.stderr
    learner = subprocess.run([str(BIN / "flops-learner"), "--task",
                              '{"task": {"name": "digits-mlp"}, "data": {"dataset": "digits", '
                              '"partitioning": {"scheme": "iid", "alpha": 0.5, "seed": 1}}}',
                              "--superlink", "127.0.0.1:1", "--partition-id", "3", "--num-partitions", "2",
                              "--workdir", str(tmp_path / "l")], capture_output=True, text=True, timeout=120)
    assert learner.returncode == 1, learner.stderr
    assert "partition id 3" in learner.stderr


def _admission(**changes: str) -> dict[str, str]:
    pki_ = LoopbackPki()
    env = AggregatorEnv(config=aggregator_config(project({"task": {"name": "digits-mlp"}})),
                        superlink_address="127.0.0.1:1", workdir="w", admission=pki_.aggregator()).to_env()
    stranger = LoopbackPki().aggregator()
    values = {"FLOPS_SUPERLINK_CERT": stranger.cert, "FLOPS_SUPERLINK_KEY": stranger.key, "other key": pki.new_key()}
    return {name: env[name] if value == "" else values.get(value, value)
            for name, value in {"FLOPS_FLOWER_CA_CERT": "", "FLOPS_SUPERLINK_CERT": "", "FLOPS_SUPERLINK_KEY": "",
                                "FLOPS_ENROLL_ADDRESS": "", **changes}.items() if value is not None}


@pytest.mark.parametrize("given, message", [
    (_admission(FLOPS_SUPERLINK_KEY=None, FLOPS_ENROLL_ADDRESS=None),
     "FLOPS_SUPERLINK_KEY, FLOPS_ENROLL_ADDRESS not set"),
    (_admission(FLOPS_FLOWER_CA_CERT="not a pem"), "not a CA certificate"),
    (_admission(FLOPS_SUPERLINK_KEY="other key"), "not for its key"),
    (_admission(FLOPS_SUPERLINK_CERT="FLOPS_SUPERLINK_CERT", FLOPS_SUPERLINK_KEY="FLOPS_SUPERLINK_KEY"),
     "not issued by the project's CA"),
])
def test_half_or_broken_flower_admission_is_a_configuration_error(tmp_path, given, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
    env.update(AggregatorEnv(config=aggregator_config(project({"task": {"name": "digits-mlp"}})),
                             superlink_address="127.0.0.1:1", workdir=str(tmp_path / "a"), admission=None).to_env())
    done = subprocess.run([str(BIN / "flops-aggregator")], env={**env, **given}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "invalid aggregator configuration" in done.stderr and message in done.stderr


def test_a_learner_with_half_its_admission_fails_naming_the_field(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
    env.update(learner_env(project({"task": {"name": "digits-mlp"}}), 0, superlink="127.0.0.1:1",
                           clientappio_address="127.0.0.1:2", workdir=str(tmp_path / "l"), admission=None).to_env())
    done = subprocess.run([str(BIN / "flops-learner")], env={**env, "FLOPS_FLOWER_ROOT_CERT": "x"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "invalid learner setup" in done.stderr
    assert all(name in done.stderr for name in ("supernode_key", "supernode_cert", "enroll_address"))
