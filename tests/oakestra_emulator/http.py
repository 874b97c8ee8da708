"""The System Manager's HTTP surface: routes, auth decorators, encodings, and the test knobs
(latency, injected faults, call record) as middleware.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

from .model import ApiError, Steps, SystemManager
from .tokens import TokenError

Clock = Callable[[], float]


@dataclass
class Faults:
    """Injected failures: with probability `rate` a call fails with one of `kinds`.

    "500"/"502" answer that status, "timeout" hangs for `hang` seconds (the client times out). With
    probability `after_effect` the failure happens after the call took effect (the answer is lost),
    otherwise before (nothing happened).
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = ("500", "502", "timeout")
    after_effect: float = 0.5
    hang: float = 5.0
    seed: int = 1
    script: list[tuple[str, str, str, bool]] = field(default_factory=list)
    """Deterministic one-off faults: (method, route template, kind, after_effect), each used once
    by the first matching call, before any random draw."""
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self, method: str, route: str) -> tuple[str, bool] | None:
        for i, (m, r, kind, after) in enumerate(self.script):
            if (m, r) == (method, route):
                del self.script[i]
                return kind, after
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        return self.rng.choice(self.kinds), self.rng.random() < self.after_effect


@dataclass(frozen=True)
class Call:
    seq: int
    method: str
    path: str
    route: str
    """The route template, e.g. `/api/service/{serviceid}/instance`."""
    status: int | str
    fault: str | None
    effect: bool
    """The call reached the System Manager's logic (False for failures injected before it)."""
    at: float


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _double(body: Any) -> web.Response:
    """json_util.dumps(...) inside flask-smorest's @response: a JSON string holding JSON, $oid ids."""
    return _json(json.dumps(_with_oid(body)))


def _html(body: Any) -> web.Response:
    return web.Response(text=json.dumps(_with_oid(body)), content_type="text/html")


def _with_oid(body: Any) -> Any:
    if isinstance(body, list):
        return [_with_oid(b) for b in body]
    if isinstance(body, dict) and "job_name" in body:
        return {**body, "_id": {"$oid": body["microserviceID"]}}
    if isinstance(body, dict) and "application_name" in body:
        return {**body, "_id": {"$oid": body["applicationID"]}}
    return body


def _error(exc: ApiError) -> web.Response:
    return _json(exc.body, exc.status)


class SystemManagerApp:
    def __init__(self, sm: SystemManager, clock: Clock, *, latency: float = 0.0, faults: Faults | None = None,
                 list_write_gap: float = 0.0):
        self.sm, self.clock = sm, clock
        self.latency = latency
        self.list_write_gap = list_write_gap
        """Seconds between reading an app's service list and writing it back (0: other requests
        ready at that moment still get their turn). Overlapping writes to one app lose an id."""
        self.faults = faults or Faults()
        self.calls: list[Call] = []
        self.on_request: Callable[[web.Request], Awaitable[None] | None] | None = None
        """Test hook, called before each request is handled (e.g. to move a ManualClock)."""
        self._seq = 0

    # Authentication decorators (§2.3): two flavours with different error bodies.
    def _claims(self, request: web.Request) -> dict:
        header = request.headers.get("Authorization")
        token = header[7:] if header and header.startswith("Bearer ") else None
        return self.sm.mint.verify(token, self.clock())

    def jwt_required(self, request: web.Request) -> dict:
        header = request.headers.get("Authorization")
        if not header:
            raise ApiError(401, {"msg": "Missing Authorization Header"})
        if not header.startswith("Bearer "):
            raise ApiError(401, {"msg": "Missing 'Bearer' type in 'Authorization' header. "
                                        "Expected 'Authorization: Bearer <JWT>'"})
        try:
            return self._claims(request)
        except TokenError as exc:
            raise ApiError(*{"expired": (401, {"msg": "Token has expired"}),
                             "wrong_type": (422, {"msg": "Only non-refresh tokens are allowed"})}.get(
                exc.reason, (422, {"msg": "Signature verification failed"}))) from None

    def jwt_auth(self, request: web.Request) -> dict:
        try:
            return self._claims(request)
        except TokenError:
            raise ApiError(401, {"message": "Missing authentication token"}) from None

    @staticmethod
    def _admin(claims: dict) -> None:
        if "Admin" not in claims.get("roles", []):
            raise ApiError(403, {"message": "You have not enough permissions!"})

    @staticmethod
    async def _body(request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        try:
            return await request.json()
        except ValueError:
            return None

    # Handlers.
    async def login(self, request: web.Request) -> web.Response:
        return _json(self.sm.login(await self._body(request), self.clock()))

    async def refresh(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        try:
            claims = self.sm.mint.verify(header[7:] if header.startswith("Bearer ") else None, self.clock(),
                                         kind="refresh")
        except TokenError as exc:
            if exc.reason == "wrong_type":
                raise ApiError(422, {"msg": "Only refresh tokens are allowed"}) from None
            if exc.reason == "expired":
                raise ApiError(401, {"msg": "Token has expired"}) from None
            raise ApiError(401, {"msg": "Missing Authorization Header"}) from None
        token = self.sm.mint.issue(claims["sub"], claims["roles"], claims["organization"], self.clock(),
                                   kind="access")
        return _json({"token": token})

    async def create_application(self, request: web.Request) -> web.Response:
        claims = self.jwt_required(request)
        return _double(self.sm.create_application(claims["sub"], await self._body(request), self.clock()))

    async def application(self, request: web.Request) -> web.Response:
        claims = self.jwt_required(request)
        app_id = request.match_info["appid"]
        if request.method == "GET":
            return _json(self.sm.get_application(claims["sub"], app_id))
        if request.method == "PUT":
            return _json(self.sm.update_application(claims["sub"], app_id, await self._body(request)))
        return _json(self.sm.delete_application(claims["sub"], app_id, self.clock()))

    async def all_applications(self, request: web.Request) -> web.Response:
        claims = self.jwt_required(request)
        self._admin(claims)
        return _double(list(self.sm.apps.values()))

    async def user_applications(self, request: web.Request) -> web.Response:
        claims = self.jwt_required(request)
        user = self.sm.users.get(claims["sub"])
        if user is None or user.id != request.match_info["userid"]:
            raise ApiError(401)
        return _double(self.sm.user_apps(claims["sub"]))

    async def create_service(self, request: web.Request) -> web.Response:
        claims = self.jwt_auth(request)
        try:
            body = await self._body(request)
            return _json(await self._steps(self.sm.create_services_steps(claims["sub"], body, self.clock())))
        except ApiError:
            # services_blueprints.py: abort() inside try/except Exception -> 400 for everything.
            raise ApiError(400) from None

    async def service(self, request: web.Request) -> web.Response:
        claims = self.jwt_auth(request)
        job_id = request.match_info["serviceid"]
        if request.method == "GET":
            return _double(self.sm.get_service(claims["sub"], job_id))
        if request.method == "PUT":
            raise ApiError(501)
        return _json(await self._steps(self.sm.delete_service_steps(claims["sub"], job_id, self.clock())))

    async def _steps(self, steps: Steps) -> Any:
        """Run an operation, letting other requests in at its gaps. Shielded: a client that gives up
        does not stop a request the server is carrying out (nor does it in the real SM)."""
        async def carry_out() -> Any:
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    return done.value
                await asyncio.sleep(self.list_write_gap)
        return await asyncio.shield(asyncio.ensure_future(carry_out()))

    async def all_services(self, request: web.Request) -> web.Response:
        claims = self.jwt_auth(request)
        self._admin(claims)
        return _double(list(self.sm.jobs.values()))

    async def app_services(self, request: web.Request) -> web.Response:
        claims = self.jwt_auth(request)
        return _double(self.sm.list_services(claims["sub"], request.match_info["appid"]))

    async def deploy(self, request: web.Request) -> web.Response:
        claims = self.jwt_auth(request)
        return _json(self.sm.deploy_instance(claims["sub"], request.match_info["serviceid"], self.clock()))

    async def undeploy(self, request: web.Request) -> web.Response:
        claims = self.jwt_auth(request)
        return _json(self.sm.undeploy_instance(claims["sub"], request.match_info["serviceid"],
                                               request.match_info["n"]))

    async def clusters(self, request: web.Request) -> web.Response:
        return _html([c.document() for c in self.sm.clusters])

    async def active_clusters(self, request: web.Request) -> web.Response:
        return _html([c.document() for c in self.sm.clusters if c.active])

    async def user(self, request: web.Request) -> web.Response:
        claims = self.jwt_auth(request)
        name = request.match_info["username"]
        user = self.sm.users.get(name)
        if user is None or name != claims["sub"]:
            raise ApiError(401, {"message": "Missing authentication token"})
        return _html({"_id": {"$oid": user.id}, "name": user.name, "roles": user.roles})

    @staticmethod
    async def slash_redirect(request: web.Request) -> web.Response:
        # Werkzeug's strict_slashes: 308 keeps method and body.
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPPermanentRedirect(request.path + "/" + query)

    # Middleware: record, latency, faults, the asynchronous world's clock, error encoding.
    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        self._seq += 1
        seq, started = self._seq, time.monotonic()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        fault, effect, status = None, False, 0
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            drawn = self.faults.draw(request.method, route)
            if drawn and not drawn[1]:
                fault = f"{drawn[0]}-before"
                status = await self._fail(drawn[0])
            if self.on_request is not None:
                outcome = self.on_request(request)
                if asyncio.iscoroutine(outcome):
                    await outcome
            self.sm.tick(self.clock())
            effect = True
            try:
                response = await handler(request)
            except ApiError as exc:
                response = _error(exc)
            except web.HTTPException as exc:
                if exc.status in (404, 405):
                    response = _json({"code": exc.status, "status": exc.reason}, exc.status)
                else:
                    response = web.Response(status=exc.status, headers=exc.headers)
            if drawn:
                fault = f"{drawn[0]}-after"
                status = await self._fail(drawn[0])
            status = response.status
            return response
        except _Injected as exc:
            status = exc.status
            return _json({"code": exc.status, "status": "injected"}, exc.status)
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            self.calls.append(Call(seq, request.method, request.path, route, status, fault, effect, started))

    async def _fail(self, kind: str) -> int:
        if kind == "timeout":
            await asyncio.sleep(self.faults.hang)
            raise _Injected(504)
        raise _Injected(int(kind))

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        r = app.router
        r.add_post("/api/auth/login", self.login)
        r.add_post("/api/auth/refresh", self.refresh)
        r.add_post("/api/application/", self.create_application)
        r.add_route("*", "/api/application/{appid}", self._methods(self.application, "GET", "PUT", "DELETE"))
        r.add_get("/api/applications/", self.all_applications, allow_head=False)
        r.add_get("/api/applications/{userid}", self.user_applications, allow_head=False)
        r.add_post("/api/service/", self.create_service)
        r.add_route("*", "/api/service/{serviceid}", self._methods(self.service, "GET", "PUT", "DELETE"))
        r.add_post("/api/service/{serviceid}/instance", self.deploy)
        r.add_delete("/api/service/{serviceid}/instance/{n}", self.undeploy)
        r.add_get("/api/services/", self.all_services, allow_head=False)
        r.add_get("/api/services/{appid}", self.app_services, allow_head=False)
        r.add_get("/api/clusters/", self.clusters, allow_head=False)
        r.add_get("/api/clusters/active", self.active_clusters, allow_head=False)
        r.add_get("/api/user/{username}", self.user, allow_head=False)
        for collection in ("application", "applications", "service", "services", "clusters"):
            r.add_route("*", f"/api/{collection}", self.slash_redirect)
        return app

    @staticmethod
    def _methods(handler: Callable, *allowed: str) -> Callable:
        async def guarded(request: web.Request) -> web.Response:
            if request.method not in allowed:
                raise ApiError(405)
            return await handler(request)
        return guarded


class _Injected(Exception):
    def __init__(self, status: int):
        self.status = status
