"""The aggregator's settings: FLOPS_CONFIG (the operator's plan.desired.aggregator_config) parsed once."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

CONFIG_ENV = "FLOPS_CONFIG"
WORKDIR_ENV = "FLOPS_WORKDIR"
TRACKING_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class Settings:
    raw: dict
    workdir: Path
    tracking_uri: str
    """Empty: bare mode, nothing is logged to MLflow."""

    @property
    def project(self) -> dict:
        return self.raw.get("project", {})

    @property
    def experiment(self) -> str:
        return self.raw.get("experiment") or f"{self.project.get('namespace', 'default')}/{self.project.get('name', 'flops')}"

    @property
    def task(self) -> dict:
        return self.raw["task"]

    @property
    def data(self) -> dict:
        return self.raw.get("data", {})

    @property
    def training(self) -> dict:
        return self.raw.get("training", {})

    @property
    def rounds(self) -> int:
        return int(self.training.get("rounds", 3))

    @property
    def strategy(self) -> dict:
        return self.training.get("strategy", {})

    @property
    def num_learners(self) -> int:
        return int(self.raw.get("numLearners", 2))

    def min_learners(self) -> tuple[int, int, int]:
        t, n = self.training, self.num_learners
        return (int(t.get("minTrainLearners") or n), int(t.get("minEvaluateLearners") or n),
                int(t.get("minAvailableLearners") or n))

    @property
    def round_timeout(self) -> float:
        return float(self.training.get("roundTimeoutSeconds", 600))

    @property
    def seed(self) -> int:
        return int(self.data.get("partitioning", {}).get("seed", 42))

    @property
    def best_metric(self) -> tuple[str, str]:
        best = self.training.get("bestModel", {})
        return best.get("metric", "eval_accuracy"), best.get("mode", "max")

    @property
    def model_name(self) -> str:
        return self.raw.get("registry", {}).get("modelName") or self.project.get("name") or "flops-model"

    @property
    def alias(self) -> str:
        return self.raw.get("registry", {}).get("alias") or "champion"

    @property
    def evaluates(self) -> bool:
        return float(self.strategy.get("fractionEvaluate", 1.0)) > 0

    def params(self) -> dict[str, object]:
        """What the MLflow run records as params (the training config, never credentials)."""
        t, s = self.training, self.strategy
        min_train, min_eval, min_avail = self.min_learners()
        part = self.data.get("partitioning", {})
        params: dict[str, object] = {
            "rounds": self.rounds,
            "strategy": s.get("name", "FedAvg"),
            "fraction_train": s.get("fractionTrain", 1.0),
            "fraction_evaluate": s.get("fractionEvaluate", 1.0),
            "min_train_learners": min_train,
            "min_evaluate_learners": min_eval,
            "min_available_learners": min_avail,
            "num_learners": self.num_learners,
            "local_epochs": t.get("localEpochs", 1),
            "batch_size": t.get("batchSize", 32),
            "learning_rate": t.get("learningRate", 0.05),
            "round_timeout_seconds": self.round_timeout,
            "task": self.task.get("name") or self.task.get("module"),
            "dataset": self.data.get("dataset") or self.data.get("path") or "",
            "partitioning": part.get("scheme", "iid"),
            "partitioning_seed": self.seed,
            "best_model_metric": self.best_metric[0],
            "best_model_mode": self.best_metric[1],
        }
        if part.get("scheme") == "dirichlet":
            params["partitioning_alpha"] = part.get("alpha", 0.5)
        params.update({f"strategy_{k}": v for k, v in s.get("arguments", {}).items()})
        return params


def parse(config: str, workdir: str | Path, tracking_uri: str | None) -> Settings:
    raw = json.loads(config)
    if not isinstance(raw, dict) or "task" not in raw:
        raise ValueError("FLOPS_CONFIG must be a JSON object with at least a `task`")
    return Settings(raw=raw, workdir=Path(workdir), tracking_uri=(tracking_uri or "").strip())


def from_env() -> Settings:
    """Inside the ServerApp process: the SuperLink passes its environment down to it."""
    if not os.environ.get(CONFIG_ENV):
        raise RuntimeError(f"{CONFIG_ENV} is not set in the ServerApp's environment")
    return parse(os.environ[CONFIG_ENV], os.environ.get(WORKDIR_ENV, "."), os.environ.get(TRACKING_ENV))
