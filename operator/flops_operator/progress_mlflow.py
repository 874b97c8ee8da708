"""The training-progress gatherer both adapters use: the project's MLflow run over REST (aiohttp).

It reads what the aggregator writes (the contract is in progress.py): the latest run of the
experiment "<namespace>/<name>" tagged with the project's uid and its current training identity, its status, the round tag, the
latest metrics, the best_* metrics and the registered model's tags. Best effort: anything that
goes wrong reading it (unreachable, not yet created, unexpected answer) is None.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from flops_tracking.contract import ALLOWED_HOSTS_TAG

from .models import Project
from .plan.desired import experiment_name
from .progress import TrainingProgress

log = logging.getLogger(__name__)

API = "/api/2.0/mlflow"
UID_TAG = "flops.project.uid"
TRAINING_ID_TAG = "flops.training.id"
STOP_TAG = "flops.stop.requested"
LEARNERS_TAG = "flops.learners"
ROUND_OVERHEAD = "round_overhead_seconds"
# What MLflow answers (403) to a Host header not in its --allowed-hosts (mlflow.server.security_utils).
INVALID_HOST = "Invalid Host header"
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
    """ProgressSource over MLflow's REST API. One HTTP session, closed with close()."""

    def __init__(self, *, timeout: float = 5.0, headers: dict[str, str] | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = headers or {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any] | None:
        async with self._client().request(method, url, **kwargs) as response:
            if response.status in (401, 403):
                if INVALID_HOST in await response.text():  # not a login problem: allow_address's to mend
                    log.info("MLflow at %s does not answer to that address (yet)", url.split("/api/")[0])
                    return None
                # Said once per look, without the login: a wrong or missing password is someone's to fix.
                log.warning("MLflow at %s refused the operator's login (%s)", url.split("/api/")[0], response.status)
                return None
            if response.status == 404:
                return None
            response.raise_for_status()
            return await response.json(content_type=None)

    async def fetch(self, project: Project, tracking_url: str,
                    login: tuple[str, str] | None = None) -> TrainingProgress | None:
        base = tracking_url.rstrip("/") + API
        auth = {"Authorization": aiohttp.encode_basic_auth(*login)} if login else None
        try:
            found = await self._call("GET", f"{base}/experiments/get-by-name",
                                     params={"experiment_name": experiment_name(project)}, headers=auth)
            if not found or "experiment" not in found:
                return None
            experiment_id = found["experiment"]["experiment_id"]
            runs = await self._call("POST", f"{base}/runs/search", json={
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

    async def request_stop(self, project: Project, tracking_url: str, run_id: str, reason: str,
                           login: tuple[str, str] | None = None) -> bool:
        return await self._set_tag(project, tracking_url, run_id, STOP_TAG, reason, login, "stop request")

    async def request_learners(self, project: Project, tracking_url: str, run_id: str, count: int,
                               login: tuple[str, str] | None = None) -> bool:
        return await self._set_tag(project, tracking_url, run_id, LEARNERS_TAG, str(count), login, "learner count")

    async def _set_tag(self, project: Project, tracking_url: str, run_id: str, key: str, value: str,
                       login: tuple[str, str] | None, what: str) -> bool:
        auth = {"Authorization": aiohttp.encode_basic_auth(*login)} if login else None
        try:
            answer = await self._call("POST", tracking_url.rstrip("/") + API + "/runs/set-tag",
                                      json={"run_id": run_id, "key": key, "value": value}, headers=auth)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            log.info("%s: the %s to MLflow run %s was not written: %s", project.ref.key, what, run_id, exc)
            return False
        return answer is not None  # None: refused (401/403, said by _call) or no such run

    async def allow_address(self, project: Project, tracking_url: str, via: str,
                            login: tuple[str, str] | None = None) -> bool:
        base = tracking_url.rstrip("/") + API
        public = urlsplit(tracking_url).netloc
        auth = {"Authorization": aiohttp.encode_basic_auth(*login)} if login else {}
        query = {"experiment_name": experiment_name(project)}
        try:
            async with self._client().get(f"{base}/experiments/get-by-name", params=query, headers=auth) as response:
                if response.status != 403 or INVALID_HOST not in await response.text():
                    return True
            through = {**auth, "Host": via}
            found = await self._call("GET", f"{base}/experiments/get-by-name", params=query, headers=through)
            if not found or "experiment" not in found:
                return False
            written = await self._call("POST", f"{base}/experiments/set-experiment-tag", headers=through, json={
                "experiment_id": found["experiment"]["experiment_id"], "key": ALLOWED_HOSTS_TAG, "value": public})
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError) as exc:
            log.info("%s: the tracking server's public address %s was not announced: %s", project.ref.key, public, exc)
            return False
        if written is not None:
            log.info("%s: the tracking server does not answer at %s yet: asked it (through %s) to allow it",
                     project.ref.key, public, via)
        return written is not None
