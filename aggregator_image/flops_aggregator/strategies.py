"""The spec's strategy as a Flower Message-API strategy, observed round by round and timed (timing.py).

Fused evaluation (contract Training.evaluation = "fused"): Flower's loop asks for a train and an evaluate
exchange per round. Here a round's evaluate exchange is left empty; the next round's train messages ask the
learners to evaluate the global model they carry first (it is this round's result), and the final round keeps
its real evaluate exchange. The evaluation is aggregated by the strategy's own aggregate_evaluate, as if it had
come in evaluate replies, and a round is reported once its evaluation is in. Which learners evaluate follows
fraction_evaluate and min_evaluate_nodes, among the learners sampled for the next round's training.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategies

from flops_learner import contract as keys

from .settings import Settings
from .timing import Exchange, LearnerTiming, RoundTiming

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
    timing: RoundTiming = field(default_factory=RoundTiming)

    @property
    def duration_seconds(self) -> float:
        return self.timing.wall()

    @property
    def overhead_seconds(self) -> float:
        return self.timing.overhead()


class RoundObserver(Protocol):
    def on_round(self, result: RoundResult) -> None: ...

    def on_final_evaluate(self, result: RoundResult) -> None:
        """The final model's evaluation is out to the learners (result.arrays is that model; its metrics
        are not in yet): work that needs the final model can overlap the evaluation."""
        ...


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


def evaluation_replies(train_replies: list[Message]) -> list[Message]:
    """The evaluations that train replies carried, as the evaluate replies the strategy knows how to read."""
    return [Message(content=RecordDict({"metrics": MetricRecord(dict(m.content[keys.EVALUATION_RECORD]))}),
                    dst_node_id=m.metadata.src_node_id, message_type=MessageType.EVALUATE)
            for m in train_replies if not m.has_error() and keys.EVALUATION_RECORD in m.content]


def observed(base: type, observer: RoundObserver | None, fused: bool = False, offset: int = 0) -> type:
    """`base` with hooks that time each exchange and report each finished round (train + evaluate).

    `offset`: rounds a resumed training already did (checkpoint.py). Flower counts this run's rounds from 1;
    the reports and the learners (their shuffling seeds, their last-round detection) see the training's
    own round numbers, offset + Flower's."""

    class Observed(base):
        _num_rounds = 0
        _pending: RoundResult | None = None
        """Fused: the last round, reported once the next train replies bring its evaluation."""

        def start(self, grid, initial_arrays, num_rounds=3, *args, **kwargs):
            self._num_rounds = num_rounds
            return super().start(grid, initial_arrays, num_rounds, *args, **kwargs)

        def configure_train(self, server_round, arrays, config, grid):
            self._grid, self._round = grid, RoundResult(round=server_round + offset, arrays=arrays)
            self._exchange = self._begin("train")
            messages = self._shifted(list(super().configure_train(server_round, arrays, config, grid)))
            if self._pending is not None:
                messages = self._asking_evaluation(messages, grid)
            return messages

        def aggregate_train(self, server_round, replies: Iterable[Message]):
            replies = list(replies)
            self._note(replies)
            arrays, metrics = super().aggregate_train(server_round, replies)
            if arrays is not None:
                self._round.arrays = arrays
            self._round.num_train_learners = _answered(replies)
            self._round.metrics.update(_prefixed("train", metrics))
            previous, self._pending = self._pending, None
            if previous is not None:
                evaluations = evaluation_replies(replies)
                previous.num_eval_learners = len(evaluations)
                previous.metrics.update(_prefixed("eval", super().aggregate_evaluate(previous.round, evaluations)))
            self._exchange.aggregated_at = time.time()
            if previous is not None:
                self._report(previous)
            return arrays, metrics

        def configure_evaluate(self, server_round, arrays, config, grid):
            if fused and server_round < self._num_rounds:
                return []
            self._grid, self._exchange = grid, self._begin("evaluate")
            messages = self._shifted(list(super().configure_evaluate(server_round, arrays, config, grid)))
            final = getattr(observer, "on_final_evaluate", None)
            if server_round == self._num_rounds and messages and callable(final) and hasattr(grid, "after_push"):
                result = self._round
                grid.after_push(lambda: final(result))
            return messages

        def aggregate_evaluate(self, server_round, replies: Iterable[Message]):
            replies = list(replies)
            if fused and server_round < self._num_rounds:
                self._pending = self._round
                return None
            self._note(replies)
            metrics = super().aggregate_evaluate(server_round, replies)
            self._round.num_eval_learners = _answered(replies)
            self._round.metrics.update(_prefixed("eval", metrics))
            self._exchange.aggregated_at = time.time()
            self._report(self._round)
            return metrics

        def _begin(self, kind: str) -> Exchange:
            exchange = Exchange(kind, self._round.round)
            self._round.timing.exchanges.append(exchange)
            return exchange

        def _note(self, replies: list[Message]) -> None:
            received = getattr(self._grid, "received_at", {})
            self._exchange.pushed_at = getattr(self._grid, "pushed_at", None)
            self._exchange.learners = [t for m in replies
                                       if (t := LearnerTiming.of(m, received.get(m.metadata.message_id)))]

        def _asking_evaluation(self, messages: list[Message], grid) -> list[Message]:
            """Flower's evaluate sampling (fraction_evaluate of the connected learners, at least
            min_evaluate_nodes), drawn from the learners this round trains."""
            wanted = max(int(len(list(grid.get_node_ids())) * self.fraction_evaluate), self.min_evaluate_nodes)
            chosen = set(random.sample(range(len(messages)), min(wanted, len(messages))))
            return [self._with_evaluation(m) if i in chosen else m for i, m in enumerate(messages)]

        def _with_evaluation(self, message: Message) -> Message:
            return self._configured(message, {keys.EVALUATE_RECEIVED: True})

        def _shifted(self, messages: list[Message]) -> list[Message]:
            if not offset:
                return messages
            return [self._configured(m, {"server-round": int(m.content[self.configrecord_key]["server-round"])
                                         + offset}) for m in messages]

        def _configured(self, message: Message, updates: dict) -> Message:
            content = RecordDict(dict(message.content.items()))
            config = ConfigRecord(dict(content[self.configrecord_key]))
            config.update(updates)
            content[self.configrecord_key] = config
            return Message(content=content, dst_node_id=message.metadata.dst_node_id,
                           message_type=message.metadata.message_type)

        def _report(self, result: RoundResult) -> None:
            """The bookkeeping (best model, MLflow) counts in the exchange that does it."""
            started = time.perf_counter()
            try:
                if observer is not None:
                    observer.on_round(result)
            finally:
                self._exchange.bookkeeping += time.perf_counter() - started

    Observed.__name__ = Observed.__qualname__ = base.__name__
    return Observed


def build(settings: Settings, observer: RoundObserver | None, offset: int = 0):
    spec = settings.strategy
    name = spec.name
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
    arguments = spec.arguments
    foreign = sorted(set(arguments) - set(ARGUMENTS[name]))
    if foreign:
        raise ValueError(f"strategy {name} does not take {', '.join(foreign)}")
    min_train, min_eval, min_avail = settings.min_learners()
    return observed(STRATEGIES[name], observer, fused=settings.fused_evaluation, offset=offset)(
        fraction_train=spec.fraction_train,
        fraction_evaluate=spec.fraction_evaluate,
        min_train_nodes=min_train,
        min_evaluate_nodes=min_eval,
        min_available_nodes=min_avail,
        **{k: float(v) for k, v in arguments.items()},
    )
