"""Learner training (FedProx term), the ClientApp's records, strategies from the spec, the bounded Grid."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategies

from flops_aggregator.grid import BoundedGrid, NotEnoughLearners
from tests.projects import aggregator_settings
from flops_aggregator.strategies import RoundResult, build
from flops_learner.builtin import DigitsMLP, IrisLogReg
from flops_learner.client_app import from_record, to_record, train_config
from flops_learner.loading import load_task
from flops_learner.task import TrainConfig


def _distance(a, b) -> float:
    return float(np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


def test_fedprox_term_changes_the_local_update_and_keeps_it_nearer_the_global_model():
    task = DigitsMLP()
    data = task.load_data({"dataset": "digits", "partitioning": {"scheme": "dirichlet", "alpha": 0.3, "seed": 1}}, 0, 3)
    start = task.get_weights(task.build_model(seed=0))

    def local_update(mu: float):
        model = task.build_model(seed=0)
        task.set_weights(model, start)
        task.train(model, data, TrainConfig(epochs=3, batch_size=16, learning_rate=0.1, proximal_mu=mu, seed=9))
        return task.get_weights(model)

    plain, prox = local_update(0.0), local_update(1.0)
    assert _distance(plain, prox) > 1e-3
    assert _distance(prox, start) < _distance(plain, start)


@pytest.fixture
def in_a_run(monkeypatch):
    """Flower builds Messages only inside a run (the ServerApp process knows its run and node ids)."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def test_proximal_mu_sent_by_fedprox_reaches_the_learners_training_config(in_a_run):
    sent = build(_settings({"name": "FedProx", "proximalMu": 0.7}, learners=2), observer=None)
    config = ConfigRecord({"lr": 0.02, "local-epochs": 3, "batch-size": 8})
    (content, _) = [m.content for m in sent.configure_train(2, ArrayRecord(), config, _FakeGrid(nodes=2))]
    cfg = train_config(content["config"], partition_id=1)
    assert (cfg.proximal_mu, cfg.learning_rate, cfg.epochs, cfg.batch_size) == (0.7, 0.02, 3, 8)
    plain = build(_settings({"name": "FedAvg"}, learners=2), observer=None)
    (content, _) = [m.content for m in plain.configure_train(2, ArrayRecord(), ConfigRecord(), _FakeGrid(nodes=2))]
    assert train_config(content["config"], partition_id=1).proximal_mu == 0.0


def test_weights_round_trip_through_an_array_record():
    task = IrisLogReg()
    weights = task.get_weights(task.build_model(seed=4))
    back = from_record(to_record(weights))
    assert list(back) == list(weights)
    assert all(np.array_equal(back[k], weights[k]) for k in weights)


def test_training_learns_iris():
    task = load_task({"name": "iris-logreg"})
    data = task.load_data({"dataset": "iris", "partitioning": {"scheme": "iid", "seed": 0}}, 0, 1)
    model = task.build_model(seed=0)
    before = task.evaluate(model, data)
    task.train(model, data, TrainConfig(epochs=20, batch_size=16, learning_rate=0.05))
    after = task.evaluate(model, data)
    assert after.loss < before.loss
    assert after.metrics["accuracy"] > 0.8


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="built-in"):
        load_task({"name": "resnet-9000"})


def _settings(strategy: dict, learners: int = 3, arguments: dict | None = None):
    settings = aggregator_settings({"task": {"name": "digits-mlp"}, "learners": {"replicas": learners},
                                    "training": {"rounds": 2, "strategy": strategy, "minTrainLearners": 2}})
    if arguments is None:
        return settings
    # What a hand-written FLOPS_CONFIG could say, though the spec refuses it.
    config = settings.config.model_copy(update={"training": settings.training.model_copy(update={
        "strategy": settings.strategy.model_copy(update={"arguments": arguments})})})
    return type(settings)(config, settings.workdir, settings.tracking_uri)


@pytest.mark.parametrize("name, arguments, attribute", [
    ("FedAvg", {}, None),
    ("FedProx", {"proximal_mu": 0.3}, ("proximal_mu", 0.3)),
    ("FedAdam", {"eta": 0.2, "eta_l": 0.1, "beta_1": 0.8, "beta_2": 0.95, "tau": 0.01}, ("beta_2", 0.95)),
    ("FedAdagrad", {"eta": 0.2, "eta_l": 0.1, "tau": 0.01}, ("eta", 0.2)),
    ("FedYogi", {"eta": 0.2, "eta_l": 0.1, "beta_1": 0.8, "beta_2": 0.95, "tau": 0.01}, ("tau", 0.01)),
    ("FedMedian", {}, None),
    ("FedTrimmedAvg", {"beta": 0.1}, ("beta", 0.1)),
])
def test_strategy_from_the_spec(name, arguments, attribute):
    wire = {"proximal_mu": "proximalMu", "eta_l": "etaL", "beta_1": "beta1", "beta_2": "beta2"}
    strategy = build(_settings({"name": name, "fractionEvaluate": 0.5, **{wire.get(k, k): v for k, v in arguments.items()}}),
                     observer=None)
    assert isinstance(strategy, getattr(flwr_strategies, name))
    assert (strategy.min_train_nodes, strategy.min_evaluate_nodes, strategy.min_available_nodes) == (2, 3, 3)
    assert strategy.fraction_evaluate == 0.5
    if attribute:
        assert getattr(strategy, attribute[0]) == attribute[1]


def test_strategy_arguments_of_another_strategy_are_refused():
    with pytest.raises(ValueError, match="does not take"):
        build(_settings({"name": "FedAvg"}, arguments={"proximal_mu": 0.1}), observer=None)


class _FakeGrid:
    """Just enough of a Grid: nodes, and replies that arrive after a number of pulls."""

    def __init__(self, nodes: int):
        self.nodes, self.pulls = nodes, 0

    def get_node_ids(self):
        return list(range(self.nodes))

    def push_messages(self, messages):
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, ids):
        self.pulls += 1
        if self.pulls < 3:
            return []
        return [type("Reply", (), {"metadata": type("Meta", (), {"reply_to_message_id": i, "message_id": f"r-{i}"})()})()
                for i in ids]


def test_bounded_grid_collects_all_replies_and_fails_when_learners_stay_missing():
    grid = BoundedGrid(_FakeGrid(nodes=2), min_nodes=2, wait_timeout=0.0, poll_seconds=0.0)
    replies = list(grid.send_and_receive(["a", "b"], timeout=None))
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1"]
    short = BoundedGrid(_FakeGrid(nodes=1), min_nodes=2, wait_timeout=0.0, poll_seconds=0.0)
    assert short.get_node_ids() == [0]  # the first short look starts the clock
    with pytest.raises(NotEnoughLearners):
        while True:
            short.get_node_ids()


class _Rounds:
    def __init__(self):
        self.results: list[RoundResult] = []

    def on_round(self, result: RoundResult) -> None:
        self.results.append(result)


def test_observed_strategy_reports_each_round_with_prefixed_weighted_metrics(in_a_run):
    rounds = _Rounds()
    strategy = build(_settings({"name": "FedAvg"}, learners=2), observer=rounds)
    list(strategy.configure_train(1, ArrayRecord({"w": Array(np.zeros(2))}), ConfigRecord(), _FakeGrid(nodes=2)))

    def reply(metrics: dict, weights: np.ndarray | None) -> Message:
        content = RecordDict({"metrics": MetricRecord(metrics)})
        if weights is not None:
            content["arrays"] = ArrayRecord({"w": Array(weights)})
        return Message(content=content, dst_node_id=0, message_type="train")

    strategy.aggregate_train(1, [reply({"loss": 1.0, "num-examples": 10}, np.ones(2)),
                                 reply({"loss": 3.0, "num-examples": 30}, np.full(2, 5.0))])
    strategy.aggregate_evaluate(1, [reply({"loss": 0.5, "accuracy": 0.9, "num-examples": 10}, None)])
    (result,) = rounds.results
    assert result.metrics["train_loss"] == pytest.approx(2.5)
    assert result.metrics["eval_loss"] == pytest.approx(0.5)
    assert result.metrics["eval_accuracy"] == pytest.approx(0.9)
    assert (result.round, result.num_train_learners, result.num_eval_learners) == (1, 2, 1)
    assert np.allclose(result.arrays["w"].numpy(), 4.0)
