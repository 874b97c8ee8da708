"""`python -m flops_aggregator.superlink FLAGS`: Flower's `flower-superlink`, with only the Fleet API open to the
network.

flwr 1.42 serves the Fleet, Control and Runtime (ServerAppIo) APIs on one HTTP port, and without account
authentication (Flower's OIDC plugin is an enterprise feature) the Control API lets anyone who reaches that port
register a SuperNode key of their own, start or stop runs and pull their results; the Runtime API hands out
messages. SuperNode authentication would then admit whoever asks. Inside the aggregator only its own processes
use Control and Runtime, always over loopback (its `flwr` commands, and Flower's SuperExec, which reaches the
SuperLink at the bind address with 0.0.0.0 turned into 127.0.0.1), so this adds one ASGI middleware, through
the FastAPI app's own middleware list (`flwr.superlink.main._get_middleware`, pinned Flower version only:
tests/unit/test_superlink_fleet_only.py fails when that point is gone), that answers 403 to every request from
another address unless it is for the Fleet API or the health check.
"""

from __future__ import annotations

import ipaddress
import sys

PUBLIC_PREFIXES = ("/v1/fleet/", "/health")


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


def install() -> None:
    """Put the middleware first in the SuperLink app's middleware list (raises if flwr moved that point)."""
    from flwr.superlink import main
    from starlette.middleware import Middleware

    flowers = main._get_middleware  # AttributeError here: the pinned Flower's extension point is gone
    if getattr(flowers, "_flops_fleet_only", False):
        return

    def middleware() -> list:
        return [Middleware(FleetOnlyFromOutside), *flowers()]

    middleware._flops_fleet_only = True  # type: ignore[attr-defined]
    main._get_middleware = middleware


def main() -> None:
    install()
    from flwr.superlink.cli.flower_superlink import flower_superlink

    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
