"""The operator's writes to a project's MLflow run, the control half of the contract in progress.py: a stop
request (spec.suspend), the learner count to admit, the tracking server's public address. Best effort: False when
a write did not happen (the next look asks again)."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp
from flops_tracking.contract import ALLOWED_HOSTS_TAG

from .mlflow_rest import API, INVALID_HOST, MlflowRest, basic_auth
from .models import Project
from .plan.desired import experiment_name
from .progress import LEARNERS_TAG, STOP_TAG

log = logging.getLogger(__name__)


class MlflowControl:
    """TrainingControl over MLflow's REST API (its own session unless given one to share)."""

    def __init__(self, rest: MlflowRest | None = None, *, timeout: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        self._rest = rest or MlflowRest(timeout=timeout, headers=headers)

    async def close(self) -> None:
        await self._rest.close()

    async def request_stop(self, project: Project, tracking_url: str, run_id: str, reason: str,
                           login: tuple[str, str] | None = None) -> bool:
        return await self._set_tag(project, tracking_url, run_id, STOP_TAG, reason, login, "stop request")

    async def request_learners(self, project: Project, tracking_url: str, run_id: str, count: int,
                               login: tuple[str, str] | None = None) -> bool:
        return await self._set_tag(project, tracking_url, run_id, LEARNERS_TAG, str(count), login, "learner count")

    async def _set_tag(self, project: Project, tracking_url: str, run_id: str, key: str, value: str,
                       login: tuple[str, str] | None, what: str) -> bool:
        auth = basic_auth(login)
        try:
            answer = await self._rest.call("POST", tracking_url.rstrip("/") + API + "/runs/set-tag",
                                      json={"run_id": run_id, "key": key, "value": value}, headers=auth)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            log.info("%s: the %s to MLflow run %s was not written: %s", project.ref.key, what, run_id, exc)
            return False
        return answer is not None  # None: refused (401/403, said by _call) or no such run

    async def allow_address(self, project: Project, tracking_url: str, via: str,
                            login: tuple[str, str] | None = None) -> bool:
        base = tracking_url.rstrip("/") + API
        public = urlsplit(tracking_url).netloc
        auth = basic_auth(login)
        query = {"experiment_name": experiment_name(project)}
        try:
            async with self._rest.client().get(f"{base}/experiments/get-by-name", params=query, headers=auth) as response:
                if response.status != 403 or INVALID_HOST not in await response.text():
                    return True
            through = {**auth, "Host": via}
            found = await self._rest.call("GET", f"{base}/experiments/get-by-name", params=query, headers=through)
            if not found or "experiment" not in found:
                return False
            written = await self._rest.call("POST", f"{base}/experiments/set-experiment-tag", headers=through, json={
                "experiment_id": found["experiment"]["experiment_id"], "key": ALLOWED_HOSTS_TAG, "value": public})
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError) as exc:
            log.info("%s: the tracking server's public address %s was not announced: %s", project.ref.key, public, exc)
            return False
        if written is not None:
            log.info("%s: the tracking server does not answer at %s yet: asked it (through %s) to allow it",
                     project.ref.key, public, via)
        return written is not None
