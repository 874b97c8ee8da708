"""The ClientApp (Message API). It trains/evaluates the task on this learner's data and replies with
weights, example counts and metrics only; it talks to nobody else (no MLflow, data stays here).

The SuperNode's node config carries the learner's identity (`partition-id`, `num-partitions`) and where the
entrypoint put the task description (`flops-task-file`) and its state directory (`flops-state-dir`).

A train message whose config sets `evaluate-received` asks the learner to evaluate the global model it
received before training on it: that model is the previous round's result, so the aggregator gets the
previous round's evaluation with this round's training, in one exchange instead of two.
Every reply carries a `timing` record (flops_learner.timing) besides what Flower's strategies read.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import contract as keys
from .loading import load_task
from .task import Dataset, Evaluation, Task, TrainConfig, warm_up
from .timing import Stopwatch

NUM_EXAMPLES = "num-examples"
PROGRESS_FILE = "progress.json"

app = ClientApp()

# The task and data of this process, by the node config that names them. A ClientApp forked from the warm
# launcher (flops_learner.warm_clientapp) finds them here already; a fresh process fills it once.
_prepared: dict[tuple[str, str, int], tuple[Task, Dataset]] = {}


def to_record(weights: OrderedDict) -> ArrayRecord:
    return ArrayRecord(OrderedDict((k, Array(v)) for k, v in weights.items()))


def from_record(record: ArrayRecord) -> OrderedDict:
    return OrderedDict((k, v.numpy()) for k, v in record.items())


def train_config(config: ConfigRecord, partition_id: int) -> TrainConfig:
    server_round = int(config.get("server-round", 0))
    return TrainConfig(
        epochs=int(config.get("local-epochs", 1)),
        batch_size=int(config.get("batch-size", 32)),
        learning_rate=float(config.get("lr", 0.05)),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        # Different shuffles per learner and round, reproducible from the run's seed.
        seed=int(config.get("seed", 0)) * 100_003 + server_round * 1_009 + partition_id,
    )


def prepare(node_config: dict) -> tuple[Task, Dataset, int]:
    """The task and this learner's data. The entrypoint prepared the data once (`flops-data-file`), so a
    ClientApp skips the dataset libraries and the partitioning; within one process it is loaded once."""
    partition_id = int(node_config["partition-id"])
    key = (str(node_config["flops-task-file"]), str(node_config.get("flops-data-file") or ""), partition_id)
    if key not in _prepared:
        wire = json.loads(Path(key[0]).read_text())
        task = load_task(wire["task"])
        if key[1] and Path(key[1]).is_file():
            data = Dataset.load(key[1])
        else:
            data = task.load_data(wire["data"], partition_id, int(node_config["num-partitions"]))
        _prepared[key] = (task, data)
    task, data = _prepared[key]
    return task, data, partition_id


def _record_progress(context: Context, config: ConfigRecord, kind: str) -> None:
    """Tell the entrypoint how far the run got: after the last message of the last round it may stop."""
    state_dir = context.node_config.get("flops-state-dir")
    if not state_dir:
        return
    server_round, last_round = int(config.get("server-round", 0)), int(config.get("num-rounds", 0))
    final_kind = "evaluate" if bool(config.get("evaluates", True)) else "train"
    progress = {"run_id": context.run_id, "round": server_round, "kind": kind,
                "final": bool(last_round) and server_round >= last_round and kind == final_kind}
    target = Path(str(state_dir)) / PROGRESS_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(progress))
    tmp.replace(target)


def _evaluation(result: Evaluation) -> dict[str, float]:
    return {"loss": float(result.loss), **{k: float(v) for k, v in result.metrics.items()},
            NUM_EXAMPLES: result.num_examples}


@app.train()
def train(msg: Message, context: Context) -> Message:
    clock = Stopwatch()
    with clock.step(keys.SETUP_SECONDS):
        task, data, partition_id = prepare(context.node_config)
        # What training would import lazily (a no-op in a warm ClientApp): counted as setup, not as work.
        warm_up(task)
        config = msg.content["config"]
        model = task.build_model(seed=0)
        task.set_weights(model, from_record(msg.content["arrays"]))
    reply = RecordDict()
    if bool(config.get(keys.EVALUATE_RECEIVED, False)):
        with clock.step(keys.EVALUATE_SECONDS):
            reply[keys.EVALUATION_RECORD] = ConfigRecord(_evaluation(task.evaluate(model, data)))
    with clock.step(keys.FIT_SECONDS):
        loss = task.train(model, data, train_config(config, partition_id))
    reply["arrays"] = to_record(task.get_weights(model))
    reply["metrics"] = MetricRecord({"loss": float(loss), NUM_EXAMPLES: len(data.y_train)})
    _record_progress(context, config, "train")
    reply[keys.TIMING_RECORD] = clock.record()
    return Message(content=reply, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    clock = Stopwatch()
    with clock.step(keys.SETUP_SECONDS):
        task, data, _ = prepare(context.node_config)
        config = msg.content["config"]
        model = task.build_model(seed=0)
        task.set_weights(model, from_record(msg.content["arrays"]))
    with clock.step(keys.EVALUATE_SECONDS):
        metrics = _evaluation(task.evaluate(model, data))
    _record_progress(context, config, "evaluate")
    reply = RecordDict({"metrics": MetricRecord(metrics), keys.TIMING_RECORD: clock.record()})
    return Message(content=reply, reply_to=msg)
