"""The training-progress reader both adapters use: the project's MLflow run over REST (aiohttp). It only reads;
what the operator writes to a run (a stop request, a learner count, an allowed host) is control_mlflow's.

It reads what the aggregator writes (the contract is in progress.py): the latest run of the
experiment "<namespace>/<name>" tagged with the project's uid and its current training identity, its status, the round tag, the
latest metrics, the best_* metrics and the registered model's tags. Best effort: anything that
goes wrong reading it (unreachable, not yet created, unexpected answer) is None.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from .mlflow_rest import API, MlflowRest, basic_auth
from .models import Project
from .plan.desired import experiment_name
from .progress import LEARNERS_TAG, STOP_TAG, TRAINING_ID_TAG, UID_TAG, TrainingProgress

log = logging.getLogger(__name__)

ROUND_OVERHEAD = "round_overhead_seconds"
# Metrics that are not per-round training numbers: mlflow's own system metrics, the end summary.
_NOT_LATEST = ("system/", "best_")


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _checkpoint_round(tag: str | None) -> int | None:
    """"<round>:<slot>" (the aggregator's checkpoint_mlflow.Saved)."""
    value = _number(str(tag).split(":")[0]) if tag else None
    return int(value) if value is not None else None


def progress_from_run(experiment_id: str, run: dict[str, Any]) -> TrainingProgress:
    """Pure: an MLflow REST `run` object as TrainingProgress."""
    info, data = run.get("info") or {}, run.get("data") or {}
    tags = {t["key"]: t.get("value") for t in data.get("tags") or [] if "key" in t}
    metrics = {m["key"]: float(m["value"]) for m in data.get("metrics") or []
               if "key" in m and _number(m.get("value")) is not None}
    latest = {k: v for k, v in metrics.items() if not k.startswith(_NOT_LATEST) and k != "best_round"}
    best = {k.removeprefix("best_"): v for k, v in metrics.items() if k.startswith("best_") and k != "best_round"}
    best_round = metrics.get("best_round", _number(tags.get("flops.best_round")))
    round_tag = _number(tags.get("flops.round"))
    promoted = tags.get("flops.model.promoted")
    return TrainingProgress(
        experiment_id=experiment_id,
        run_id=info.get("run_id") or info.get("run_uuid"),
        run_status=info.get("status"),
        round=int(round_tag) if round_tag is not None else 0,
        latest_metrics=latest,
        best_metrics=best,
        best_round=int(best_round) if best_round is not None else None,
        round_overhead_seconds=metrics.get(ROUND_OVERHEAD),
        last_round_seconds=metrics.get("round_duration_seconds"),
        learners_answered=int(metrics["num_train_learners"]) if "num_train_learners" in metrics else None,
        checkpoint_round=_checkpoint_round(tags.get("flops.checkpoint")),
        error=tags.get("flops.error"),
        stop_requested=tags.get(STOP_TAG),
        learners_tag=tags.get(LEARNERS_TAG),
        model_name=tags.get("flops.model.name"),
        model_version=tags.get("flops.model.version"),
        model_alias=tags.get("flops.model.alias"),
        model_uri=tags.get("flops.model.uri"),
        promoted=None if promoted is None else promoted.lower() == "true",
    )


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_filter(project: Project) -> str:
    """MLflow's search filter for the runs of this project's current training: a run of another identity
    (an earlier spec, a failed run before a fix) never decides this one's outcome."""
    return (f"tags.`{UID_TAG}` = {_quoted(project.ref.uid)}"
            f" AND tags.`{TRAINING_ID_TAG}` = {_quoted(project.training_identity)}")


class MlflowProgress:
    """ProgressSource over MLflow's REST API (its own session unless given one to share)."""

    def __init__(self, rest: MlflowRest | None = None, *, timeout: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        self._rest = rest or MlflowRest(timeout=timeout, headers=headers)

    async def close(self) -> None:
        await self._rest.close()

    async def fetch(self, project: Project, tracking_url: str,
                    login: tuple[str, str] | None = None) -> TrainingProgress | None:
        base = tracking_url.rstrip("/") + API
        auth = basic_auth(login)
        try:
            found = await self._rest.call("GET", f"{base}/experiments/get-by-name",
                                     params={"experiment_name": experiment_name(project)}, headers=auth)
            if not found or "experiment" not in found:
                return None
            experiment_id = found["experiment"]["experiment_id"]
            runs = await self._rest.call("POST", f"{base}/runs/search", json={
                "experiment_ids": [experiment_id],
                "filter": run_filter(project),
                "order_by": ["attributes.start_time DESC"],
                "max_results": 1,
            }, headers=auth)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError) as exc:
            log.debug("progress of %s not readable at %s: %s", project.ref.key, tracking_url, exc)
            return None
        run_list = (runs or {}).get("runs") or []
        if not run_list:
            return None
        return progress_from_run(experiment_id, run_list[0])
