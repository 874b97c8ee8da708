"""A training resumed from a checkpoint goes on where it stopped: Flower's loop starts a new run from the
checkpoint's model, the reports and the learners see the training's own round numbers, and the result is the
one an uninterrupted training gives (simulated learners, as in test_fl_rounds)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from flops_aggregator import checkpoint
from flops_aggregator.best import BestKeeper
from flops_aggregator.grid import BoundedGrid
from flops_aggregator.strategies import build
from tests.projects import aggregator_settings
from tests.unit.test_fl_rounds import _Learners, _Rounds, in_a_run  # noqa: F401  (the fixture is autouse there)

ROUNDS, NODES = 5, 3


@pytest.fixture(autouse=True)
def _run(in_a_run):
    pass


class _SeeingLearners(_Learners):
    """Also notes the round number each message tells the learners."""

    def __init__(self, nodes):
        super().__init__(nodes)
        self.rounds_told = []

    def push_messages(self, messages):
        messages = list(messages)
        self.rounds_told += [int(m.content["config"]["server-round"]) for m in messages]
        return super().push_messages(messages)


def run(evaluation, start, rounds, offset):
    spec = {"task": {"name": "digits-mlp"}, "learners": {"replicas": NODES}, "training": {"rounds": ROUNDS}}
    learners, observer = _SeeingLearners(NODES), _Rounds()
    strategy = build(aggregator_settings(spec, evaluation=evaluation), observer, offset=offset)
    strategy.start(grid=BoundedGrid(learners, min_nodes=NODES, wait_timeout=60, poll_seconds=0),
                   initial_arrays=ArrayRecord({"w": Array(np.full(2, float(start)))}), num_rounds=rounds, timeout=60,
                   train_config=ConfigRecord({"lr": 0.1}), evaluate_config=ConfigRecord())
    return observer.results, learners.rounds_told


def summary(results):
    return [(r.round, float(r.arrays["w"].numpy()[0]), r.metrics.get("eval_loss")) for r in results]


@pytest.mark.parametrize("evaluation", ["separate", "fused"])
def test_a_resumed_training_continues_the_rounds_and_ends_as_an_uninterrupted_one(evaluation):
    whole, told_whole = run(evaluation, start=0, rounds=ROUNDS, offset=0)
    first, _ = run(evaluation, start=0, rounds=2, offset=0)
    # The checkpoint of the last reported round: its model is where the rest starts.
    model_after_2 = float(first[-1].arrays["w"].numpy()[0])
    rest, told_rest = run(evaluation, start=model_after_2, rounds=ROUNDS - 2, offset=2)
    assert [r.round for r in rest] == [3, 4, 5]
    assert summary(first) + summary(rest) == summary(whole)
    assert set(told_rest) == {3, 4, 5} and set(told_whole) == {1, 2, 3, 4, 5}


def test_checkpoint_round_trip_and_best_kept(tmp_path):
    keeper = BestKeeper("eval_accuracy", "max", tmp_path / "work")
    best = checkpoint.Best(2, 0.8, {"eval_accuracy": 0.8, "eval_loss": 0.5}, {"w": np.arange(3.0), "b": np.ones(1)})
    keeper.restore(best)
    saved = checkpoint.save(tmp_path / "ckpt", checkpoint.Checkpoint(3, {"w": np.full(3, 7.0), "b": np.zeros(1)},
                                                                      keeper.kept()))
    again = checkpoint.save(saved, checkpoint.load(saved))  # replacing a checkpoint in place works too
    loaded = checkpoint.load(again)
    assert loaded.round == 3 and list(loaded.weights) == ["w", "b"] and loaded.weights["w"][0] == 7.0
    assert (loaded.best.round, loaded.best.value, loaded.best.metrics) == (2, 0.8, best.metrics)
    assert np.array_equal(loaded.best.weights["w"], np.arange(3.0))
    assert keeper.best.round == 2 and np.array_equal(keeper.weights()["w"], np.arange(3.0))


def test_a_missing_checkpoint_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.json"):
        checkpoint.load(tmp_path / "nothing")
