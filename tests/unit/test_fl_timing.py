"""Round timing: the phases of an exchange add up to its wall time, the overhead is what the slowest learner's
work leaves; the ClientApp reports its own steps (and, asked to, the received model's evaluation)."""

from __future__ import annotations

import json
import time

import numpy as np
import psutil
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from flops_aggregator.timing import PHASES, Exchange, LearnerTiming, RoundTiming
from flops_learner import client_app
from flops_learner import contract as keys
from flops_learner.builtin import DigitsMLP
from flops_learner.timing import process_started_at


def _learner(started, entered, replied, evaluate, fit, received) -> LearnerTiming:
    return LearnerTiming(started_at=started, entered_at=entered, replied_at=replied, evaluate=evaluate, fit=fit,
                         received_at=received)


def test_phases_follow_the_last_reply_and_add_up_to_the_wall_time():
    exchange = Exchange("train", 1, started_at=100.0, pushed_at=100.1, aggregated_at=102.0, bookkeeping=0.05,
                        learners=[_learner(100.5, 100.7, 101.7, 0.2, 0.6, 101.9),
                                  _learner(100.3, 100.4, 101.4, 0.1, 0.8, 101.5)])
    phases = exchange.phases()
    assert list(phases) == list(PHASES)
    assert phases == pytest.approx({"configure": 0.1, "delivery": 0.4, "start": 0.2, "setup": 0.2, "work": 0.8,
                                    "reply": 0.2, "aggregation": 0.1, "bookkeeping": 0.05})
    assert sum(phases.values()) == pytest.approx(exchange.wall()) == pytest.approx(2.05)
    # The overhead is measured against the slowest worker, whichever replied last.
    assert exchange.work() == pytest.approx(0.9)
    round_timing = RoundTiming([exchange, Exchange("evaluate", 1, started_at=102.1, pushed_at=102.1,
                                                   aggregated_at=102.6, learners=[
                                                       _learner(102.2, 102.3, 102.4, 0.1, 0.0, 102.5)])])
    assert round_timing.wall() == pytest.approx(2.55)
    assert round_timing.overhead() == pytest.approx(2.55 - 0.9 - 0.1)
    assert json.loads(json.dumps(round_timing.to_json()))["overhead"] == pytest.approx(round_timing.overhead())


def test_an_exchange_without_timed_replies_is_all_overhead():
    exchange = Exchange("evaluate", 2, started_at=10.0, pushed_at=10.5, aggregated_at=13.0)
    assert exchange.work() == 0 and exchange.wall() == pytest.approx(3.0)
    assert exchange.phases()["aggregation"] == pytest.approx(2.5)


def test_process_start_is_this_process_creation_time():
    started = process_started_at()
    assert started <= time.time()
    # psutil rounds the boot time to whole seconds; ours is exact to a clock tick.
    assert abs(started - psutil.Process().create_time()) < 1.5


@pytest.fixture
def learner_context(tmp_path, monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for attribute in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attribute, 1)
    wire = {"task": {"name": "digits-mlp"},
            "data": {"dataset": "digits", "partitioning": {"scheme": "iid", "alpha": 0.5, "seed": 3}}}
    (tmp_path / "task.json").write_text(json.dumps(wire))
    DigitsMLP().load_data(wire["data"], 1, 3).save(tmp_path / "data.npz")
    node_config = {"partition-id": 1, "num-partitions": 3, "flops-task-file": str(tmp_path / "task.json"),
                   "flops-data-file": str(tmp_path / "data.npz")}
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


def _train_message(weights, **config) -> Message:
    content = RecordDict({"arrays": client_app.to_record(weights),
                          "config": ConfigRecord({"server-round": 2, "local-epochs": 1, **config})})
    message = Message(content=content, dst_node_id=1, message_type="train")
    message.metadata.__dict__["_message_id"] = message.object_id
    return message


@pytest.mark.parametrize("asked", [False, True])
def test_a_train_reply_evaluates_the_received_model_only_when_asked(learner_context, asked):
    task = DigitsMLP()
    received = task.get_weights(task.build_model(seed=11))
    config = {keys.EVALUATE_RECEIVED: True} if asked else {}
    reply = client_app.train(_train_message(received, **config), learner_context).content
    timing = reply[keys.TIMING_RECORD]
    assert timing[keys.STARTED_AT] <= timing[keys.ENTERED_AT] <= timing[keys.REPLIED_AT]
    assert timing[keys.FIT_SECONDS] > 0
    assert (keys.EVALUATION_RECORD in reply) is asked
    assert (timing[keys.EVALUATE_SECONDS] > 0) is asked
    if asked:
        model = task.build_model(seed=0)
        task.set_weights(model, received)
        expected = task.evaluate(model, client_app.prepare(learner_context.node_config)[1])
        evaluation = reply[keys.EVALUATION_RECORD]
        assert evaluation["loss"] == pytest.approx(expected.loss)
        assert evaluation["accuracy"] == pytest.approx(expected.metrics["accuracy"])
        assert evaluation[client_app.NUM_EXAMPLES] == expected.num_examples
    # The trained weights moved away from the received ones.
    trained = client_app.from_record(reply["arrays"])
    assert any(not np.array_equal(trained[k], received[k]) for k in received)
