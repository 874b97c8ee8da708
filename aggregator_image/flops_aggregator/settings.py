"""The aggregator's settings: its environment (contract.AggregatorEnv, which the operator's plan renders)
parsed once, plus the few values derived from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .contract import ENV_CONFIG, ENV_TRACKING_URI, ENV_WORKDIR, AggregatorConfig, Strategy, Training

CONFIG_ENV, WORKDIR_ENV, TRACKING_ENV = ENV_CONFIG, ENV_WORKDIR, ENV_TRACKING_URI


@dataclass(frozen=True)
class Settings:
    config: AggregatorConfig
    workdir: Path
    tracking_uri: str
    """Empty: bare mode, nothing is logged to MLflow."""

    @property
    def experiment(self) -> str:
        return self.config.experiment

    @property
    def training(self) -> Training:
        return self.config.training

    @property
    def strategy(self) -> Strategy:
        return self.config.training.strategy

    @property
    def rounds(self) -> int:
        return self.config.training.rounds

    @property
    def round_timeout(self) -> float:
        return self.config.training.round_timeout_seconds

    @property
    def seed(self) -> int:
        return self.config.data.partitioning.seed

    @property
    def best_metric(self) -> tuple[str, str]:
        best = self.config.training.best_model
        return best.metric, best.mode

    @property
    def evaluates(self) -> bool:
        return self.strategy.fraction_evaluate > 0

    @property
    def fused_evaluation(self) -> bool:
        """One exchange per round (contract.Evaluation); nothing to fuse when nothing is evaluated."""
        return self.config.training.evaluation == "fused" and self.evaluates

    @property
    def async_logging(self) -> bool:
        return self.config.mlflow_logging == "async"

    def min_learners(self) -> tuple[int, int, int]:
        t = self.config.training
        return t.min_train_learners, t.min_evaluate_learners, t.min_available_learners

    def params(self) -> dict[str, object]:
        """What the MLflow run records as params (the training config, never credentials)."""
        c, t, s = self.config, self.config.training, self.strategy
        part = c.data.partitioning
        params: dict[str, object] = {
            "rounds": t.rounds,
            "strategy": s.name,
            "fraction_train": s.fraction_train,
            "fraction_evaluate": s.fraction_evaluate,
            "min_train_learners": t.min_train_learners,
            "min_evaluate_learners": t.min_evaluate_learners,
            "min_available_learners": t.min_available_learners,
            "num_learners": c.num_learners,
            "local_epochs": t.local_epochs,
            "batch_size": t.batch_size,
            "learning_rate": t.learning_rate,
            "round_timeout_seconds": t.round_timeout_seconds,
            "task": c.task.name or c.task.module or c.task.entrypoint,
            "dataset": c.data.dataset or c.data.path or "",
            "partitioning": part.scheme,
            "partitioning_seed": part.seed,
            "best_model_metric": t.best_model.metric,
            "best_model_mode": t.best_model.mode,
            "evaluation": t.evaluation,
            "mlflow_logging": c.mlflow_logging,
        }
        if part.scheme == "dirichlet":
            params["partitioning_alpha"] = part.alpha
        params.update({f"strategy_{k}": v for k, v in s.arguments.items()})
        return params


def parse(config: str, workdir: str | Path, tracking_uri: str | None) -> Settings:
    """Raises pydantic.ValidationError (a ValueError) naming the fields that are wrong."""
    return Settings(config=AggregatorConfig.model_validate_json(config), workdir=Path(workdir),
                    tracking_uri=(tracking_uri or "").strip())


def from_env() -> Settings:
    """Inside the ServerApp process: the SuperLink passes its environment down to it."""
    if not os.environ.get(CONFIG_ENV):
        raise RuntimeError(f"{CONFIG_ENV} is not set in the ServerApp's environment")
    return parse(os.environ[CONFIG_ENV], os.environ.get(WORKDIR_ENV, "."), os.environ.get(TRACKING_ENV))
