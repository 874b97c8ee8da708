"""A training's resumable state at its last reported round: the global model, the round, and the best model
so far (weights, round, metrics). Written to the workdir after every reported round and uploaded in the
background to the MLflow run's artifacts (the artifact store), from where the next aggregator of the same
training reads it back: after `spec.suspend`, or after its aggregator was replaced or stopped.

Flower cannot resume a run; a new run starts from these parameters with the round counter continuing
(strategies.build(offset=...)). Adaptive strategies (FedAdam, FedAdagrad, FedYogi) start their server-side
moments afresh on resume: only the model is carried over.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARTIFACT_PATH = "checkpoint"
RESUMED_TAG = "flops.resumed_from_round"
_STATE, _MODEL, _BEST = "state.json", "model.npz", "best.npz"

Weights = OrderedDict  # name -> np.ndarray, in the model's order


@dataclass
class Best:
    round: int
    value: float
    metrics: dict[str, float]
    weights: Weights


@dataclass
class Checkpoint:
    round: int
    """The last reported round: a resumed training goes on with the next one."""
    weights: Weights
    best: Best | None


def _save_weights(path: Path, weights: Weights) -> None:
    np.savez(path, **weights)


def _load_weights(path: Path) -> Weights:
    with np.load(path) as stored:
        return OrderedDict((k, stored[k]) for k in stored.files)


def save(directory: Path, checkpoint: Checkpoint) -> Path:
    """Write the checkpoint as a directory, replacing the previous one whole (a reader never sees half)."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _save_weights(partial / _MODEL, checkpoint.weights)
    state: dict = {"round": checkpoint.round, "best": None}
    if checkpoint.best is not None:
        _save_weights(partial / _BEST, checkpoint.best.weights)
        state["best"] = {"round": checkpoint.best.round, "value": checkpoint.best.value,
                         "metrics": checkpoint.best.metrics}
    (partial / _STATE).write_text(json.dumps(state))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(partial, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def load(directory: Path) -> Checkpoint:
    """Raises FileNotFoundError / ValueError naming what is missing or unreadable."""
    state = json.loads((directory / _STATE).read_text())
    best = None
    if state.get("best") is not None:
        b = state["best"]
        best = Best(int(b["round"]), float(b["value"]), {k: float(v) for k, v in b["metrics"].items()},
                    _load_weights(directory / _BEST))
    return Checkpoint(int(state["round"]), _load_weights(directory / _MODEL), best)
