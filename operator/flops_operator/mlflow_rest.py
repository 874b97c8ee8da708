"""One HTTP session to a project's MLflow REST API, shared by the progress reader (progress_mlflow) and the
control writer (control_mlflow): how answers are read, what a refusal means, said once, without the login."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

API = "/api/2.0/mlflow"
# What MLflow answers (403) to a Host header not in its --allowed-hosts (mlflow.server.security_utils).
INVALID_HOST = "Invalid Host header"


def basic_auth(login: tuple[str, str] | None) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(*login)} if login else {}


class MlflowRest:
    """Closed with close(); reopened on the next call."""

    def __init__(self, *, timeout: float = 5.0, headers: dict[str, str] | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = headers or {}
        self._session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any] | None:
        """The JSON answer; None for a refusal (401/403) or 404."""
        async with self.client().request(method, url, **kwargs) as response:
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
