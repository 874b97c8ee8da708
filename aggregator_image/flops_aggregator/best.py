"""Keeps the best global model seen so far (by the spec's metric and mode), on disk in the workdir."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint
from .strategies import RoundResult


def better(candidate: float, incumbent: float | None, mode: str) -> bool:
    """Strictly better: a tie keeps the incumbent."""
    if incumbent is None:
        return True
    return candidate > incumbent if mode == "max" else candidate < incumbent


@dataclass
class Best:
    round: int
    value: float
    metrics: dict[str, float]
    path: Path


class BestKeeper:
    def __init__(self, metric: str, mode: str, workdir: Path):
        if mode not in ("max", "min"):
            raise ValueError(f"best-model mode must be max or min, not {mode!r}")
        self.metric, self.mode, self.path = metric, mode, workdir / "best-model.npz"
        self.best: Best | None = None

    def offer(self, result: RoundResult) -> bool:
        value = result.metrics.get(self.metric)
        if value is None or result.arrays is None or not np.isfinite(value):
            return False
        if not better(value, self.best.value if self.best else None, self.mode):
            return False
        weights = OrderedDict((k, v.numpy()) for k, v in result.arrays.items())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name("best-model.tmp.npz")
        np.savez(tmp, **weights)
        tmp.replace(self.path)
        self.best = Best(result.round, float(value), dict(result.metrics), self.path)
        return True

    def restore(self, best: checkpoint.Best) -> None:
        """A resumed training's best so far, as its checkpoint kept it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.path, **best.weights)
        self.best = Best(best.round, best.value, dict(best.metrics), self.path)

    def kept(self) -> checkpoint.Best | None:
        """The best so far, for a checkpoint."""
        if self.best is None:
            return None
        return checkpoint.Best(self.best.round, self.best.value, dict(self.best.metrics), self.weights())

    def weights(self) -> OrderedDict[str, np.ndarray]:
        if self.best is None:
            raise RuntimeError("no round produced the metric that selects the best model")
        with np.load(self.best.path) as stored:
            return OrderedDict((k, stored[k]) for k in stored.files)
