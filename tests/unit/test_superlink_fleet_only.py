"""flops_aggregator.superlink: only the Fleet API (and the health check) answers clients beyond loopback. An override
of Flower (its SuperLink app's private middleware hook): these tests fail loudly when the installed Flower is not the
pinned one or the hook changed, and show that the SuperLink then refuses to start rather than run unlocked."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from flwr.superlink import main as flower_main

from flops_aggregator import superlink

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture
def hook(monkeypatch):
    """Flower's own hook, put back after the test (install() replaces it)."""
    original = getattr(flower_main, superlink.HOOK)
    monkeypatch.setattr(flower_main, superlink.HOOK, original)
    return original


def test_the_pinned_flower_still_has_the_hook_this_lockdown_replaces():
    pinned = next(line.split("==", 1)[1].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if line.startswith("flwr=="))
    assert metadata.version("flwr") == superlink.PINNED_FLOWER == pinned, (
        "Flower changed: re-read flwr/superlink/main.py (create_app, _get_middleware) and update "
        "flops_aggregator.superlink before moving its PINNED_FLOWER; until then the SuperLink refuses to start")
    assert superlink.problem() is None


def test_the_pinned_flower_builds_its_superlink_app_with_the_middleware_first(hook):
    superlink.install()
    superlink.install()  # twice: still once
    app = flower_main.create_app()
    assert [m.cls for m in app.user_middleware].count(superlink.FleetOnlyFromOutside) == 1
    assert app.user_middleware[0].cls is superlink.FleetOnlyFromOutside


async def test_the_installed_superlink_app_refuses_the_control_api_beyond_loopback(hook):
    superlink.install()
    app = flower_main.create_app()

    async def status(method: str, path: str, client: tuple[str, int]) -> int:
        transport = httpx.ASGITransport(app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://superlink") as http:
            return (await http.request(method, path)).status_code

    assert await status("POST", "/v1/control/start-run", ("192.0.2.9", 4321)) == 403
    assert await status("POST", "/v1/runtime/pull-messages", ("10.30.0.7", 4321)) == 403
    assert await status("GET", "/health", ("192.0.2.9", 4321)) == 200
    # Flower's own answers (an empty body is not protobuf), not ours.
    assert await status("POST", "/v1/fleet/pull-messages", ("192.0.2.9", 4321)) != 403
    assert await status("POST", "/v1/control/start-run", ("127.0.0.1", 4321)) != 403


def _app_without_the_hook():
    return flower_main.FastAPI(middleware=[])


UPGRADES = {
    "another version": lambda mp: mp.setattr(superlink.metadata, "version", lambda name: "1.43.0"),
    "hook gone": lambda mp: mp.delattr(flower_main, superlink.HOOK),
    "hook takes arguments": lambda mp: mp.setattr(flower_main, superlink.HOOK, lambda app: []),
    "hook returns no list": lambda mp: mp.setattr(flower_main, superlink.HOOK, lambda: ()),
    "app built without the hook": lambda mp: mp.setattr(flower_main, superlink.APP_FACTORY, _app_without_the_hook),
}


@pytest.mark.parametrize("upgrade", UPGRADES)
def test_an_upgraded_flower_makes_the_superlink_refuse_to_start(upgrade, hook, monkeypatch):
    UPGRADES[upgrade](monkeypatch)
    before = getattr(flower_main, superlink.HOOK, None)
    assert superlink.problem() is not None
    with pytest.raises(superlink.LockdownUnavailable):
        superlink.install()
    assert getattr(flower_main, superlink.HOOK, None) is before  # nothing half-installed
    started = []
    # The module, not the function of the same name its package exports.
    cli = importlib.import_module("flwr.superlink.cli.flower_superlink")
    monkeypatch.setattr(cli, "flower_superlink", lambda: started.append(True))
    with pytest.raises(SystemExit) as exited:
        superlink.main()
    assert exited.value.code != 0 and "refusing to start" in str(exited.value.code)
    assert not started


def test_the_guard_reads_the_hook_as_flower_calls_it():
    """The shape check itself: Flower's create_app passes middleware=_get_middleware(); an app that does not, fails."""
    assert superlink._builds_app_with_hook(flower_main.create_app)
    assert not superlink._builds_app_with_hook(_app_without_the_hook)
    assert not inspect.signature(getattr(flower_main, superlink.HOOK)).parameters
