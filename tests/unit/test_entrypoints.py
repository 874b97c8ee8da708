"""The two Python entrypoints as processes: their --help documents every setting of their contract, and
a bad setting fails fast with the documented exit code (the images' smoke tests run them in containers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flops_aggregator import contract as aggregator_contract
from flops_learner import contract as learner_contract

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
