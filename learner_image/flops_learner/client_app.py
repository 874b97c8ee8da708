"""The ClientApp (Message API). It trains/evaluates the task on this learner's data and replies with
weights, example counts and metrics only; it talks to nobody else (no MLflow, data stays here).

The SuperNode's node config carries the learner's identity (`partition-id`, `num-partitions`) and where the
entrypoint put the task description (`flops-task-file`) and its state directory (`flops-state-dir`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .task import Dataset, Task, TrainConfig, load_task

NUM_EXAMPLES = "num-examples"
PROGRESS_FILE = "progress.json"

app = ClientApp()


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


def _setup(context: Context) -> tuple[Task, Dataset, int]:
    """The task and this learner's data. The entrypoint prepared the data once (`flops-data-file`): a fresh
    ClientApp process per message then skips the dataset libraries and the partitioning."""
    node = context.node_config
    wire = json.loads(Path(str(node["flops-task-file"])).read_text())
    task, partition_id = load_task(wire["task"]), int(node["partition-id"])
    cached = node.get("flops-data-file")
    if cached and Path(str(cached)).is_file():
        data = Dataset.load(str(cached))
    else:
        data = task.load_data(wire["data"], partition_id, int(node["num-partitions"]))
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


@app.train()
def train(msg: Message, context: Context) -> Message:
    task, data, partition_id = _setup(context)
    config = msg.content["config"]
    model = task.build_model(seed=0)
    task.set_weights(model, from_record(msg.content["arrays"]))
    loss = task.train(model, data, train_config(config, partition_id))
    reply = RecordDict({
        "arrays": to_record(task.get_weights(model)),
        "metrics": MetricRecord({"loss": float(loss), NUM_EXAMPLES: len(data.y_train)}),
    })
    _record_progress(context, config, "train")
    return Message(content=reply, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    task, data, partition_id = _setup(context)
    config = msg.content["config"]
    model = task.build_model(seed=0)
    task.set_weights(model, from_record(msg.content["arrays"]))
    result = task.evaluate(model, data)
    metrics = {"loss": float(result.loss), **{k: float(v) for k, v in result.metrics.items()},
               NUM_EXAMPLES: result.num_examples}
    _record_progress(context, config, "evaluate")
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
