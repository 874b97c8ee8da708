"""Rounds as Flower's own loop (Strategy.start) runs them against simulated learners: fused evaluation reports
every round with the metrics, under the round numbers, that separate train and evaluate exchanges give, in one
exchange per round plus a final evaluate; which learners evaluate follows fraction_evaluate."""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from flops_aggregator.grid import BoundedGrid
from flops_aggregator.strategies import RoundResult, build
from flops_learner import contract as keys
from tests.projects import aggregator_settings


@pytest.fixture(autouse=True)
def in_a_run(monkeypatch):
    """Flower builds Messages only inside a run (the ServerApp process knows its run and node ids)."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _timing() -> ConfigRecord:
    now = time.time()
    return ConfigRecord({keys.STARTED_AT: now, keys.ENTERED_AT: now, keys.REPLIED_AT: now,
                         keys.SETUP_SECONDS: 0.0, keys.EVALUATE_SECONDS: 0.0, keys.FIT_SECONDS: 0.0})


class _Learners:
    """A Grid whose learners answer at once. Training adds 1 to the weights it received; evaluating reports
    loss = the weight it received, so an evaluation's loss names the round whose model it evaluated."""

    def __init__(self, nodes: int):
        self.nodes, self.inbox, self.pushed = nodes, {}, []

    def get_node_ids(self):
        return list(range(1, self.nodes + 1))

    def push_messages(self, messages):
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = m.object_id
            self.inbox[m.object_id] = m
            self.pushed.append((m.metadata.message_type, bool(m.content["config"].get(keys.EVALUATE_RECEIVED))))
            ids.append(m.object_id)
        return ids

    def pull_messages(self, ids):
        replies = [self._answer(self.inbox.pop(i)) for i in list(ids) if i in self.inbox]
        for reply in replies:
            reply.metadata.__dict__["_message_id"] = reply.object_id
        return replies

    @staticmethod
    def _answer(message: Message) -> Message:
        weight = float(message.content["arrays"]["w"].numpy()[0])
        evaluation = {"loss": weight, "accuracy": weight / 10, "num-examples": 5}
        if message.metadata.message_type == MessageType.EVALUATE:
            return Message(RecordDict({"metrics": MetricRecord(evaluation), keys.TIMING_RECORD: _timing()}),
                           reply_to=message)
        content = RecordDict({"arrays": ArrayRecord({"w": Array(np.full(2, weight + 1))}),
                              "metrics": MetricRecord({"loss": weight, "num-examples": 10}),
                              keys.TIMING_RECORD: _timing()})
        if message.content["config"].get(keys.EVALUATE_RECEIVED):
            content[keys.EVALUATION_RECORD] = ConfigRecord(evaluation)
        return Message(content, reply_to=message)


class _Rounds:
    def __init__(self):
        self.results: list[RoundResult] = []

    def on_round(self, result: RoundResult) -> None:
        self.results.append(result)


def train(evaluation: str, nodes: int = 3, rounds: int = 3, **training) -> tuple[list[RoundResult], list]:
    spec = {"task": {"name": "digits-mlp"}, "learners": {"replicas": nodes}, "training": {"rounds": rounds, **training}}
    settings = aggregator_settings(spec, evaluation=evaluation)
    learners, observer = _Learners(nodes), _Rounds()
    strategy = build(settings, observer)
    strategy.start(grid=BoundedGrid(learners, min_nodes=nodes, wait_timeout=60, poll_seconds=0),
                   initial_arrays=ArrayRecord({"w": Array(np.zeros(2))}), num_rounds=rounds, timeout=60,
                   train_config=ConfigRecord({"lr": 0.1}), evaluate_config=ConfigRecord())
    return observer.results, learners.pushed


@pytest.mark.parametrize("evaluation", ["separate", "fused"])
def test_every_round_is_reported_with_the_evaluation_of_its_own_model(evaluation):
    results, _ = train(evaluation)
    assert [r.round for r in results] == [1, 2, 3]
    for r in results:
        # Round r trained on the model after round r-1 (weight r-1) and produced the model with weight r.
        assert r.metrics["train_loss"] == pytest.approx(r.round - 1)
        assert r.metrics["eval_loss"] == pytest.approx(r.round)
        assert r.metrics["eval_accuracy"] == pytest.approx(r.round / 10)
        assert (r.num_train_learners, r.num_eval_learners) == (3, 3)
        assert np.allclose(r.arrays["w"].numpy(), r.round)


def test_fused_evaluation_needs_one_exchange_per_round_and_a_final_evaluate():
    fused, pushed = train("fused", nodes=3, rounds=3)
    assert [t for t, _ in pushed].count(MessageType.EVALUATE) == 3
    assert [flag for t, flag in pushed if t == MessageType.TRAIN] == [False] * 3 + [True] * 6
    assert [[e.kind for e in r.timing.exchanges] for r in fused] == [["train"], ["train"], ["train", "evaluate"]]
    separate, pushed = train("separate", nodes=3, rounds=3)
    assert [t for t, _ in pushed].count(MessageType.EVALUATE) == 9
    assert not any(flag for _, flag in pushed)
    assert [[e.kind for e in r.timing.exchanges] for r in separate] == [["train", "evaluate"]] * 3


def test_fused_evaluation_asks_as_many_learners_as_fraction_evaluate_says():
    results, pushed = train("fused", nodes=4, rounds=3, strategy={"name": "FedAvg", "fractionEvaluate": 0.5},
                            minEvaluateLearners=1)
    asked = [flag for t, flag in pushed if t == MessageType.TRAIN]
    assert asked[4:8].count(True) == 2 and asked[8:].count(True) == 2
    assert [r.num_eval_learners for r in results] == [2, 2, 2]
    assert [r.num_train_learners for r in results] == [4, 4, 4]


def test_nothing_is_fused_when_nothing_is_evaluated():
    results, pushed = train("fused", strategy={"name": "FedAvg", "fractionEvaluate": 0.0})
    assert not any(flag for _, flag in pushed) and MessageType.EVALUATE not in [t for t, _ in pushed]
    assert [r.round for r in results] == [1, 2, 3] and all("eval_loss" not in r.metrics for r in results)


class _Ahead(_Rounds):
    """Notes, when the final evaluate's work runs, the model it gets and what the learners have by then."""

    def __init__(self, learners: _Learners):
        super().__init__()
        self.learners, self.calls = learners, []

    def on_final_evaluate(self, result: RoundResult) -> None:
        self.calls.append((result.round, float(result.arrays["w"].numpy()[0]), len(self.learners.inbox),
                           len(self.results)))


@pytest.mark.parametrize("evaluation", ["separate", "fused"])
def test_the_final_model_is_handed_over_once_while_its_evaluation_is_out(evaluation):
    nodes, rounds = 3, 3
    spec = {"task": {"name": "digits-mlp"}, "learners": {"replicas": nodes}, "training": {"rounds": rounds}}
    learners = _Learners(nodes)
    observer = _Ahead(learners)
    build(aggregator_settings(spec, evaluation=evaluation), observer).start(
        grid=BoundedGrid(learners, min_nodes=nodes, wait_timeout=60, poll_seconds=0),
        initial_arrays=ArrayRecord({"w": Array(np.zeros(2))}), num_rounds=rounds, timeout=60,
        train_config=ConfigRecord({"lr": 0.1}), evaluate_config=ConfigRecord())
    # Once, with round 3's model, after its evaluate messages were pushed (3 unanswered in the inbox) and
    # before round 3 was reported.
    assert observer.calls == [(3, 3.0, nodes, rounds - 1)]
    assert [r.round for r in observer.results] == [1, 2, 3]


def test_work_after_a_push_that_fails_does_not_fail_the_exchange(caplog):
    learners = _Learners(2)
    grid = BoundedGrid(learners, min_nodes=2, wait_timeout=60, poll_seconds=0)
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("tracking server gone")

    def message() -> Message:
        return Message(RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(2))}), "config": ConfigRecord()}),
                       dst_node_id=1, message_type=MessageType.EVALUATE)

    grid.after_push(broken)
    replies = list(grid.send_and_receive([message()]))
    assert len(replies) == 1 and not replies[0].has_error()
    assert "tracking server gone" in caplog.text
    # One-shot: the next exchange runs nothing extra.
    assert len(list(grid.send_and_receive([message()]))) == 1 and calls == [1]
