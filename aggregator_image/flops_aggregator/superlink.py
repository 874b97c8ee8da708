"""`python -m flops_aggregator.superlink FLAGS`: Flower's `flower-superlink`, with only the Fleet API open to the
network.

flwr 1.42 serves the Fleet, Control and Runtime (ServerAppIo) APIs on one HTTP port, and without account
authentication (Flower's OIDC plugin is an enterprise feature) the Control API lets anyone who reaches that port
register a SuperNode key of their own, start or stop runs and pull their results; the Runtime API hands out
messages. SuperNode authentication would then admit whoever asks. Inside the aggregator only its own processes
use Control and Runtime, always over loopback (its `flwr` commands, and Flower's SuperExec, which reaches the
SuperLink at the bind address with 0.0.0.0 turned into 127.0.0.1), so this adds one ASGI middleware that answers
403 to every request from another address unless it is for the Fleet API or the health check.

How: the third override of Flower in this repository (beside flops_learner.supernode's idle poll and
flops_runtime.flower_pulls), held to the same rules: `create_app` in flwr/superlink/main.py builds its FastAPI app
with `middleware=_get_middleware()`, a private function looked up in that module at each call, which this
replaces by one that puts our middleware first. Applied only to the Flower version it was written against and
only while that point has that shape (`problem()`); unlike the other two, which fall back to Flower's slower but
correct behaviour, this one fails closed: where it does not apply, the SuperLink refuses to start rather than
serve its Control API to the network. tests/unit/test_superlink_fleet_only.py fails when the installed Flower is
not the pinned one or the point is gone, so an upgrade has to revisit this. Nothing of Flower is copied or
changed on disk.
"""

from __future__ import annotations

import ast
import inspect
import ipaddress
import sys
import textwrap
from importlib import metadata

PUBLIC_PREFIXES = ("/v1/fleet/", "/health")
PINNED_FLOWER = "1.42.0"
HOOK = "_get_middleware"
"""flwr.superlink.main's function returning the SuperLink app's middleware, outermost first."""
APP_FACTORY = "create_app"


class LockdownUnavailable(RuntimeError):
    """The installed Flower is not the one the lockdown was written against: the SuperLink must not start."""


def _from_loopback(client: tuple[str, int] | None) -> bool:
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0].split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class FleetOnlyFromOutside:
    """Pure ASGI (no per-request task as in Starlette's BaseHTTPMiddleware): it sits on every Fleet request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] == "http" and not scope["path"].startswith(PUBLIC_PREFIXES)
                and not _from_loopback(scope.get("client"))):
            body = b"only the Fleet API answers outside the aggregator\n"
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _flowers(hook):
    """Flower's own hook, also when ours is installed already."""
    return getattr(hook, "_flops_wraps", hook)


def _builds_app_with_hook(factory) -> bool:
    """`create_app` passes `middleware=_get_middleware()` (the module-level name, no arguments) to its app."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(factory)))
    return any(isinstance(node, ast.keyword) and node.arg == "middleware" and isinstance(node.value, ast.Call)
               and isinstance(node.value.func, ast.Name) and node.value.func.id == HOOK
               and not node.value.args and not node.value.keywords
               for node in ast.walk(tree))


def problem() -> str | None:
    """None when the installed Flower builds its SuperLink app exactly as this override expects; else what differs."""
    from flwr.superlink import main
    from starlette.middleware import Middleware

    version = metadata.version("flwr")
    if version != PINNED_FLOWER:
        return f"Flower {version} is not {PINNED_FLOWER}"
    hook = getattr(main, HOOK, None)
    if not inspect.isfunction(hook):
        return f"flwr.superlink.main.{HOOK} is not a function"
    if inspect.signature(_flowers(hook)).parameters:
        return f"flwr.superlink.main.{HOOK} takes arguments"
    factory = getattr(main, APP_FACTORY, None)
    if not inspect.isfunction(factory) or not _builds_app_with_hook(factory):
        return f"flwr.superlink.main.{APP_FACTORY} no longer builds its app with middleware={HOOK}()"
    found = _flowers(hook)()
    if not isinstance(found, list) or not all(isinstance(m, Middleware) for m in found):
        return f"flwr.superlink.main.{HOOK}() no longer returns a list of Starlette Middleware"
    return None


def install() -> None:
    """Put the middleware first in the SuperLink app's middleware list; LockdownUnavailable where that point is not
    the pinned Flower's (then nothing is changed)."""
    from flwr.superlink import main
    from starlette.middleware import Middleware

    found = problem()
    if found:
        raise LockdownUnavailable(found)
    flowers = _flowers(getattr(main, HOOK))

    def middleware() -> list:
        return [Middleware(FleetOnlyFromOutside), *flowers()]

    middleware._flops_wraps = flowers  # type: ignore[attr-defined]
    setattr(main, HOOK, middleware)


def main() -> None:
    try:
        install()
    except LockdownUnavailable as exc:
        # Fail closed: an open Control API would let anyone register a SuperNode key and run code.
        sys.exit(f"flops-superlink: refusing to start: the Control API lockdown does not apply ({exc}); "
                 "update flops_aggregator.superlink for this Flower")
    from flwr.superlink.cli.flower_superlink import flower_superlink

    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
