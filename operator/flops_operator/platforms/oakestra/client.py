"""The System Manager over HTTP: one session, bounded concurrency, timeouts, tokens, retries.

Calls that are safe to repeat (reads, deletes, login) are retried here with jittered backoff.
Creates are sent once: if the answer is lost, whether they took effect is unknown
(WriteOutcomeUnknown), and only a fresh observation may decide whether to send them again —
that is the driver's job, never a blind retry (a second POST /api/service/ would wipe the
service's instance list, a second POST .../instance would add an instance).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable, Iterable, TypeVar
from urllib.parse import quote

import aiohttp

from ..base import PermanentPlatformError, TransientPlatformError
from .auth import Token, token_refused
from .config import OakestraConfig
from .retries import attempts

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUSES = frozenset({502, 503, 504})


class OakestraUnavailable(TransientPlatformError):
    """Could not get an answer (network, timeout, 5xx) after the allowed attempts."""


class WriteOutcomeUnknown(OakestraUnavailable):
    """A create failed in transit: it may or may not have taken effect. Observe before deciding."""


class TokenRefused(TransientPlatformError):
    """Oakestra refused a freshly issued token too: its auth is in trouble, not the project."""


class OakestraRefused(PermanentPlatformError):
    def __init__(self, method: str, path: str, status: int, body: Any):
        super().__init__(f"Oakestra answered {method} {path} with HTTP {status}: {_short(body)}")
        self.status, self.body = status, body


class _Retryable(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _short(body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    return text[:200]


def decode(text: str) -> Any:
    """Oakestra's bodies: JSON, JSON text under text/html, or a JSON string holding JSON (§3)."""
    if not text:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, str):
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


class OakestraClient:
    def __init__(self, config: OakestraConfig, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._token: Token | None = None
        self._auth_lock = asyncio.Lock()
        self.logins = 0
        self.refreshes = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.config.request_timeout, connect=self.config.connect_timeout)
            connector = aiohttp.TCPConnector(limit=self.config.max_in_flight)
            # Oakestra sets no cookies: no jar to consult on every call.
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                                  headers={"Accept": "application/json"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _attempts(self, step: Callable[[], Awaitable[T]], tries: int) -> T:
        """Network failures, timeouts and retryable statuses (_Retryable) are tried again."""
        return await attempts(step, tries=tries, retry_on=(_Retryable,), initial=self.config.backoff_initial,
                              maximum=self.config.backoff_max)

    async def _send(self, method: str, path: str, *, body: Any = None, bearer: str | None = None) -> tuple[int, Any]:
        """One HTTP exchange. Network failures and timeouts raise _Retryable."""
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        started = time.monotonic()
        async with self._slots:
            try:
                async with self._http().request(method, self.config.url + path, json=body, headers=headers) as resp:
                    status, text = resp.status, await resp.text()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.debug("%s %s failed: %s", method, path, type(exc).__name__)
                raise _Retryable(f"{type(exc).__name__} {exc}".strip()) from None
        log.debug("%s %s -> %s in %.0f ms", method, path, status, (time.monotonic() - started) * 1000)
        return status, decode(text)

    # Tokens.
    async def _bearer(self, stale: str | None = None) -> str:
        now = self._clock()
        token = self._token
        if token is not None and token.access != stale and token.usable(now, self.config.token_refresh_margin):
            return token.access
        async with self._auth_lock:
            token, now = self._token, self._clock()
            if token is not None and token.access != stale and token.usable(now, self.config.token_refresh_margin):
                return token.access
            if token is not None and token.access != stale and token.refreshable(now, self.config.token_refresh_margin):
                renewed = await self._refresh(token)
                if renewed is not None:
                    return renewed.access
            return (await self._login()).access

    async def _refresh(self, token: Token) -> Token | None:
        try:
            status, body = await self._send("POST", "/api/auth/refresh", bearer=token.refresh)
        except _Retryable:
            return None
        if status != 200 or not isinstance(body, dict) or "token" not in body:
            return None
        self.refreshes += 1
        self._token = token.renewed(body["token"], self._clock())
        return self._token

    async def _login(self) -> Token:
        credentials = {"username": self.config.username, "password": self.config.password}
        if self.config.organization:
            credentials["organization_name"] = self.config.organization
        async def login() -> tuple[int, Any]:
            status, body = await self._send("POST", "/api/auth/login", body=credentials)
            if status in RETRY_STATUSES or status == 500:
                raise _Retryable(f"HTTP {status}")
            return status, body

        try:
            status, body = await self._attempts(login, self.config.retries)
        except _Retryable as exc:
            raise OakestraUnavailable(f"Oakestra login failed: {exc.reason}") from None
        if status != 200 or not isinstance(body, dict) or "token" not in body:
            what = {401: "wrong username or password", 404: "unknown organization"}.get(status, f"HTTP {status}")
            raise PermanentPlatformError(f"Oakestra refused the login of user {self.config.username!r}: {what}")
        self.logins += 1
        self._token = Token.issued(body["token"], body.get("refresh_token"), self._clock())
        return self._token

    # Calls.
    async def call(self, method: str, path: str, *, body: Any = None, ok: Iterable[int] = (200,),
                   repeatable: bool, retry_on: Iterable[int] = ()) -> tuple[int, Any]:
        """One API call; statuses in `ok` are returned, others raise. A refused token -> log in
        again and send once more; refused again -> TokenRefused (transient)."""
        ok, retry_on = frozenset(ok), RETRY_STATUSES | frozenset(retry_on)

        async def once() -> tuple[int, Any]:
            bearer = await self._bearer()
            status, answer = await self._send(method, path, body=body, bearer=bearer)
            if token_refused(status, answer):
                # Expired, revoked or signed with a key Oakestra no longer has (it restarted): the
                # request was refused before it did anything.
                status, answer = await self._send(method, path, body=body, bearer=await self._bearer(stale=bearer))
                if token_refused(status, answer):
                    raise TokenRefused(f"Oakestra refused a fresh token for {method} {path} "
                                       f"(HTTP {status}: {_short(answer)})")
            if status in ok:
                return status, answer
            if status in retry_on:
                raise _Retryable(f"HTTP {status}")
            raise OakestraRefused(method, path, status, answer)

        try:
            return await self._attempts(once, self.config.retries if repeatable else 1)
        except _Retryable as exc:
            error = OakestraUnavailable if repeatable else WriteOutcomeUnknown
            raise error(f"{method} {path}: {exc.reason}") from None

    # The endpoints the driver uses (paths with the trailing slashes Oakestra declares).
    async def user_id(self) -> str:
        _, body = await self.call("GET", f"/api/user/{quote(self.config.username, safe='')}", repeatable=True,
                                  retry_on=(500,))
        try:
            return body["_id"]["$oid"]
        except (KeyError, TypeError):
            raise OakestraRefused("GET", "/api/user/", 200, body) from None

    async def list_apps(self, user_id: str) -> list[dict]:
        _, body = await self.call("GET", f"/api/applications/{user_id}", repeatable=True, retry_on=(500,))
        return body if isinstance(body, list) else []

    async def create_app(self, sla: dict) -> list[dict] | None:
        """The caller's apps after the create, or None if the app already exists (409)."""
        status, body = await self.call("POST", "/api/application/", body=sla, ok=(200, 409), repeatable=False,
                                       retry_on=(500,))
        return None if status == 409 else (body if isinstance(body, list) else [])

    async def delete_app(self, app_id: str) -> bool:
        """True if deleted, False if Oakestra says it does not exist (501)."""
        status, _ = await self.call("DELETE", f"/api/application/{app_id}", ok=(200, 501), repeatable=True,
                                    retry_on=(500,))
        return status == 200

    async def list_services(self, app_id: str) -> list[dict] | None:
        """The app's service documents, or None if the app does not exist (404)."""
        status, body = await self.call("GET", f"/api/services/{app_id}", ok=(200, 404), repeatable=True,
                                       retry_on=(500,))
        if status == 404:
            return None
        return [doc for doc in body if isinstance(doc, dict)] if isinstance(body, list) else []

    async def list_all_services(self) -> list[dict] | None:
        """Every job of every user (Admin only), or None if this user may not list them (403)."""
        status, body = await self.call("GET", "/api/services/", ok=(200, 403), repeatable=True, retry_on=(500,))
        if status == 403:
            return None
        return [doc for doc in body if isinstance(doc, dict)] if isinstance(body, list) else []

    async def create_service(self, sla: dict) -> dict:
        _, body = await self.call("POST", "/api/service/", body=sla, repeatable=False, retry_on=(500,))
        return body if isinstance(body, dict) else {}

    async def delete_service(self, service_id: str) -> bool:
        """True if deleted; False on 500, which is Oakestra's answer for "not found" (and others)."""
        status, _ = await self.call("DELETE", f"/api/service/{service_id}", ok=(200, 500), repeatable=True)
        return status == 200

    async def deploy_instance(self, service_id: str) -> None:
        await self.call("POST", f"/api/service/{service_id}/instance", repeatable=False, retry_on=(500,))

    async def undeploy_instance(self, service_id: str, number: int) -> None:
        await self.call("DELETE", f"/api/service/{service_id}/instance/{number}", repeatable=True, retry_on=(500,))
