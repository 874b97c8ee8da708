"""A thin layer over kmock 0.8 so that kopf and the official client can talk to it as to an API server.

kmock stores objects as plain JSON and leaves out what an API server adds. Each override below
supplies one missing behaviour that kopf or the `kubernetes` client depends on:

- uid/resourceVersion/generation/namespace/creationTimestamp on create (kopf's finalizer JSON patch
  tests /metadata/resourceVersion; kopf reads uid and generation), the namespace from the URL;
- generateName (kopf names every Event `kopf-event-` + suffix: without it the second one collides);
- a new resourceVersion on every write, generation bumped on spec changes, the status subresource
  separated from the main resource (as with `subresources: {status: {}}` in the CRD);
- 201 Created for a create (the official client ignores the body of a 200 there);
- a failed JSON-patch `test` answered 422 (what kopf expects to retry on), not 500;
- /api/v1/namespaces[/NAME], which kmock's path parser fails on (kopf lists and watches namespaces
  when it serves named namespaces, `-n`).

Leases (coordination.k8s.io/v1, in kmock's bundled resources) need nothing more: the leader election
takes and renews them with JSON patches whose `test` the layer already answers as an API server does.

Not emulated (tests must not rely on them): schema validation/defaulting, ownerReference GC.
Left as they are because neither kopf nor the official client minds: list responses without
`kind`, watch streams typed application/octet-stream.
"""

from __future__ import annotations

import collections
import copy
import itertools
import secrets
import string
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, AsyncIterator

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import rendering
from typing_extensions import override

from flops_operator.models import GROUP, KIND, PLURAL, VERSION
from flops_operator.models.project import CATEGORIES, SHORT_NAMES, SINGULAR

PROJECTS = f"{GROUP}/{VERSION}/{PLURAL}"
NAMESPACES = kmock.resource("", "v1", "namespaces")
_NO_NAMESPACE = "-"
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's in-memory API server with the object bookkeeping of a real one."""

    keep_log: bool = True
    """False: a request leaves kmock's log once answered (only its tally stays). kmock matches each request against
    its reactions by scanning the whole log, so a long-lived server (a benchmark's 100,000 requests) slows to a crawl
    with it; tests that inspect requests keep it."""
    tally: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    """Requests answered, by (action, resource plural or None)."""
    _versions: itertools.count = attrs.field(factory=lambda: itertools.count(1), init=False)
    _arrivals: dict[int, float] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()
        self.resources[PROJECTS] = kmock.ResourceInfo(
            kind=KIND, singular=SINGULAR, namespaced=True, shortnames=set(SHORT_NAMES),
            categories=set(CATEGORIES), subresources={"status"},
            verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
        )

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's path parser takes /api/v1/namespaces[/NAME] for the start of a namespaced URL and
        # fails; as /api/v1/namespaces/-/namespaces[/NAME] it parses (the "-" is undone in _complete).
        parts = raw_request.path.rstrip("/").split("/")
        if parts[1:4] == ["api", "v1", "namespaces"] and len(parts) <= 5:
            path = "/".join(["/api/v1/namespaces", _NO_NAMESPACE, "namespaces", *parts[4:]])
            url = raw_request.rel_url
            raw_request = raw_request.clone(rel_url=url.with_path(path).with_query(url.query))
        return await super().__call__(raw_request)

    @override
    async def _handle(self, request: rendering.Request) -> Any:
        self._arrivals[request.id] = time.monotonic()
        completed = self._complete(request)
        if completed is not request:  # kmock matches reactions to its own log of requests, by identity
            self._requests[self._position(request)] = completed
        try:
            response = await super()._handle(completed)
        finally:
            self.tally[(completed.action, completed.resource.plural if completed.resource else None)] += 1
            if not self.keep_log:
                del self._requests[self._position(completed)]
                self._arrivals.pop(request.id, None)
        if completed.action == kmock.action.CREATE and response.status == 200 and not response.prepared:
            response.set_status(201)  # the official client reads a create's body only from a 201
        return response

    @override
    async def _render_error(self, exc: Exception) -> Any:
        if isinstance(exc, (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict)):
            exc = kmock.KubernetesError(status=422, reason="Invalid", message=f"JSON patch refused: {exc}",
                                        details={})
        return await super()._render_error(exc)

    def _position(self, request: rendering.Request) -> int:
        """Where `request` is in kmock's log: searched from the end, where it was just appended (list.index from
        the start compares every earlier request field by field: quadratic over a benchmark's 100,000)."""
        for position in range(len(self._requests) - 1, -1, -1):
            if self._requests[position] is request:
                return position
        return self._requests.index(request)

    def requests_to(self, group: str, version: str, plural: str, action: kmock.action | None = None, *,
                    since: int = 0) -> list[rendering.Request]:
        """The requests (of one action, or all) to that resource, from the `since`-th request on
        (request_count() before an interval: what the operator asked during it)."""
        resource = kmock.resource(group, version, plural)
        return [r for r in self._requests[since:] if r.resource == resource and (action is None or r.action == action)]

    def request_count(self) -> int:
        """How many requests have reached it so far (in its log: with keep_log, the tally counts answered ones)."""
        return len(self._requests)

    def arrived(self, request: rendering.Request) -> float:
        """When the request reached the server (time.monotonic()): for timing what an operator did."""
        return self._arrivals[request.id]

    def watches(self, group: str, version: str, plural: str) -> int:
        """How many watches on that resource were asked for (an operator's among them: what is created then
        reaches it at once)."""
        resource = kmock.resource(group, version, plural)
        return sum(1 for r in self._requests if r.action == kmock.action.WATCH and r.resource == resource)

    def _complete(self, request: rendering.Request) -> rendering.Request:
        if request.namespace == _NO_NAMESPACE and request.resource == NAMESPACES:
            request = attrs.evolve(request, namespace=None)
        if request.resource is None or not isinstance(request.data, (dict, list)):
            return request
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            return attrs.evolve(request, data=self._created(request))
        if request.action == kmock.action.UPDATE and request.name is not None:
            return attrs.evolve(request, data=self._patched(request))
        return request

    def _has_status(self, request: rendering.Request) -> bool:
        return request.resource in self.resources and "status" in self.resources[request.resource].subresources

    def _created(self, request: rendering.Request) -> dict[str, Any]:
        data = copy.deepcopy(request.data)
        meta = data.setdefault("metadata", {})
        if request.namespace:
            meta["namespace"] = request.namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
        meta.update(uid=str(uuid.uuid4()), resourceVersion=str(next(self._versions)), generation=1,
                    creationTimestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        if self._has_status(request):
            data.pop("status", None)
        return data

    def _patched(self, request: rendering.Request) -> Any:
        version = str(next(self._versions))
        to_status = request.subresource == "status"
        split = self._has_status(request)
        key = (request.resource, request.namespace, request.name)
        current = self.objects[key].raw if key in self.objects and not self.objects[key].deleted else {}
        generation = int((current.get("metadata") or {}).get("generation") or 1)
        if isinstance(request.data, list):  # JSON patch
            ops = [op for op in request.data if op.get("op") == "test" or not split
                   or op["path"].startswith("/status") == to_status]
            if not to_status and any(op["path"].startswith("/spec") for op in ops if op.get("op") != "test"):
                ops.append({"op": "replace", "path": "/metadata/generation", "value": generation + 1})
            return ops + [{"op": "replace", "path": "/metadata/resourceVersion", "value": version}]
        data = copy.deepcopy(request.data)
        if split and to_status:
            data = {"status": data.get("status")}
        elif split:
            data.pop("status", None)
        meta = data.setdefault("metadata", {})
        meta["resourceVersion"] = version
        if not to_status and "spec" in data and _changes(current.get("spec") or {}, data["spec"]):
            meta["generation"] = generation + 1
        return data


def _changes(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Would this merge patch change `current`?"""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            if _changes(current[key], value):
                return True
        elif value is None:
            if key in current:
                return True
        elif current.get(key) != value:
            return True
    return False


@asynccontextmanager
async def serve_kubernetes(*, keep_log: bool = True) -> AsyncIterator[tuple[KubeEmulator, str]]:
    """The emulator on a free loopback port, and its URL; stopped on exit."""
    async with KubeEmulator(keep_log=keep_log) as emulator, kmock.Server(emulator) as server:
        yield emulator, str(server.url).rstrip("/")
