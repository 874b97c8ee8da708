"""The spec's strategy as a Flower Message-API strategy, observed round by round."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import strategy as flwr_strategies

from .settings import Settings

STRATEGIES = {
    "FedAvg": flwr_strategies.FedAvg,
    "FedProx": flwr_strategies.FedProx,
    "FedAdam": flwr_strategies.FedAdam,
    "FedAdagrad": flwr_strategies.FedAdagrad,
    "FedYogi": flwr_strategies.FedYogi,
    "FedMedian": flwr_strategies.FedMedian,
    "FedTrimmedAvg": flwr_strategies.FedTrimmedAvg,
}
# Each strategy's own arguments (the spec refuses others; Flower's names, snake_case).
ARGUMENTS = {
    "FedAvg": (), "FedMedian": (), "FedProx": ("proximal_mu",), "FedTrimmedAvg": ("beta",),
    "FedAdam": ("eta", "eta_l", "beta_1", "beta_2", "tau"),
    "FedAdagrad": ("eta", "eta_l", "tau"),
    "FedYogi": ("eta", "eta_l", "beta_1", "beta_2", "tau"),
}


@dataclass
class RoundResult:
    round: int
    arrays: ArrayRecord | None
    """The global model after this round's aggregation (what was evaluated)."""
    metrics: dict[str, float] = field(default_factory=dict)
    num_train_learners: int = 0
    num_eval_learners: int = 0
    duration_seconds: float = 0.0


class RoundObserver(Protocol):
    def on_round(self, result: RoundResult) -> None: ...


def _answered(replies: list[Message]) -> int:
    return sum(1 for m in replies if not m.has_error())


def _prefixed(prefix: str, record: MetricRecord | None) -> dict[str, float]:
    if record is None:
        return {}
    out = {}
    for key, value in record.items():
        if key == "num-examples" or isinstance(value, list):
            continue
        out[f"{prefix}_{key.replace('-', '_')}"] = float(value)
    return out


def observed(base: type, observer: RoundObserver) -> type:
    """`base` with hooks that report each finished round (train + evaluate) to the observer."""

    class Observed(base):
        def configure_train(self, server_round, arrays, config, grid):
            self._round = RoundResult(round=server_round, arrays=arrays)
            self._round_start = time.monotonic()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies: Iterable[Message]):
            replies = list(replies)
            arrays, metrics = super().aggregate_train(server_round, replies)
            if arrays is not None:
                self._round.arrays = arrays
            self._round.num_train_learners = _answered(replies)
            self._round.metrics.update(_prefixed("train", metrics))
            return arrays, metrics

        def aggregate_evaluate(self, server_round, replies: Iterable[Message]):
            replies = list(replies)
            metrics = super().aggregate_evaluate(server_round, replies)
            result = self._round
            result.num_eval_learners = _answered(replies)
            result.metrics.update(_prefixed("eval", metrics))
            result.duration_seconds = time.monotonic() - self._round_start
            observer.on_round(result)
            return metrics

    Observed.__name__ = Observed.__qualname__ = base.__name__
    return Observed


def build(settings: Settings, observer: RoundObserver):
    spec = settings.strategy
    name = spec.name
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
    arguments = spec.arguments
    foreign = sorted(set(arguments) - set(ARGUMENTS[name]))
    if foreign:
        raise ValueError(f"strategy {name} does not take {', '.join(foreign)}")
    min_train, min_eval, min_avail = settings.min_learners()
    return observed(STRATEGIES[name], observer)(
        fraction_train=spec.fraction_train,
        fraction_evaluate=spec.fraction_evaluate,
        min_train_nodes=min_train,
        min_evaluate_nodes=min_eval,
        min_available_nodes=min_avail,
        **{k: float(v) for k, v in arguments.items()},
    )
