"""flops_aggregator.superlink: only the Fleet API (and the health check) answers clients beyond loopback."""

from __future__ import annotations

import asyncio

import pytest

from flops_aggregator import superlink


def call(path: str, client: tuple[str, int] | None) -> int:
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "client": client}
    asyncio.run(superlink.FleetOnlyFromOutside(app)(scope, None, send))
    return sent[0]["status"]


@pytest.mark.parametrize("path, client, status", [
    ("/v1/fleet/pull-messages", ("10.30.0.7", 4321), 200),
    ("/v1/fleet/activate-node", ("192.0.2.9", 1), 200),
    ("/health", ("10.30.0.7", 1), 200),
    ("/v1/control/register-node", ("10.30.0.7", 1), 403),
    ("/v1/control/start-run", ("192.0.2.9", 1), 403),
    ("/v1/runtime/pull-messages", ("10.30.0.7", 1), 403),
    ("/docs", ("10.30.0.7", 1), 403),
    ("/v1/fleetish", ("10.30.0.7", 1), 403),
    ("/v1/control/register-node", None, 403),
    ("/v1/control/register-node", ("not-an-address", 1), 403),
    ("/v1/control/register-node", ("127.0.0.1", 1), 200),
    ("/v1/runtime/pull-messages", ("127.0.0.5", 1), 200),
    ("/v1/control/start-run", ("::1", 1), 200),
])
def test_only_the_fleet_api_answers_beyond_loopback(path, client, status):
    assert call(path, client) == status


def test_the_pinned_flower_builds_its_superlink_app_with_the_middleware_first():
    """Fails when the pinned Flower no longer builds its app's middleware through `_get_middleware`."""
    from flwr.superlink import main

    before = main._get_middleware
    try:
        superlink.install()
        superlink.install()  # twice: still once
        app = main.create_app()
        assert [m.cls for m in app.user_middleware].count(superlink.FleetOnlyFromOutside) == 1
        assert app.user_middleware[0].cls is superlink.FleetOnlyFromOutside
    finally:
        main._get_middleware = before
