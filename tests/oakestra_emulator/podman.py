"""podman for the emulator's container worker and the container tests: the CLI, run asynchronously, and
the test network.

Safety: containers join only a network made here, `--internal` (no route out of it); the host reaches
them over that network's bridge, and people reach published ports only through relays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "base_image" / "containers.conf"


def podman_env() -> dict[str, str]:
    """podman's environment: on a machine without systemd, the repository's containers.conf
    (runc, cgroupfs, file events, ulimits it may set), as base_image/engine.sh does for `make images`."""
    env = dict(os.environ)
    if not Path("/run/systemd/system").is_dir() and "CONTAINERS_CONF" not in env:
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def available() -> str | None:
    """Why containers cannot run here, or None if they can."""
    if shutil.which("podman") is None:
        return "podman is not installed (make images installs it on Debian as root)"
    done = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], capture_output=True,
                          text=True, env=podman_env(), timeout=60)
    if done.returncode != 0:
        return f"podman does not work here: {done.stderr.strip()[-300:]}"
    return None


class PodmanError(RuntimeError):
    pass


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


async def podman(*args: str, check: bool = True, timeout: float = 120.0) -> Result:
    process = await asyncio.create_subprocess_exec(
        "podman", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=podman_env())
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise PodmanError(f"podman {args[0]} did not finish within {timeout:.0f}s") from None
    result = Result(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and result.code != 0:
        raise PodmanError(f"podman {' '.join(args[:2])} failed ({result.code}): {result.err.strip()[-500:]}")
    return result


def podman_sync(*args: str, check: bool = True, timeout: float = 120.0) -> Result:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_env(), timeout=timeout)
    if check and done.returncode != 0:
        raise PodmanError(f"podman {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return Result(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Network:
    """An internal podman network whose subnet is the emulator's service-IP range."""

    name: str
    subnet: ipaddress.IPv4Network
    host_address: ipaddress.IPv4Address
    """The host's own address on the bridge: how the worker's relays and the tests reach containers."""

    @classmethod
    def create(cls, name: str, subnet: str, labels: dict[str, str]) -> "Network":
        net = ipaddress.IPv4Network(subnet)
        label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
        podman_sync("network", "create", "--internal", "--subnet", str(net), *label_args, name)
        host = next(net.hosts())
        created = cls(name, net, host)
        try:
            # An internal CNI network gives its bridge no address: without one the host cannot reach
            # the containers, and nothing else can either (no route out, no port publishing). CNI makes
            # the bridge only for the first container; made here first, it is the one CNI then uses.
            bridge = created.bridge
            if _ip("link", "show", bridge, check=False).returncode != 0:
                _ip("link", "add", "name", bridge, "type", "bridge")
                _ip("link", "set", bridge, "up")
            _ip("addr", "add", f"{host}/{net.prefixlen}", "dev", bridge)
        except Exception:
            created.remove()
            raise
        return created

    @property
    def bridge(self) -> str:
        return json.loads(podman_sync("network", "inspect", self.name).out)[0]["network_interface"]

    def forget_neighbour(self, address: str) -> None:
        """A container re-made at an address keeps it but not its MAC: drop the host's stale entry."""
        _ip("neigh", "del", address, "dev", self.bridge, check=False)

    def remove(self) -> None:
        try:
            bridge = self.bridge
        except (PodmanError, IndexError, KeyError, ValueError):
            bridge = None
        podman_sync("network", "rm", "-f", self.name, check=False)
        if bridge is not None:
            _ip("link", "del", bridge, check=False)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise PodmanError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


_LIST = {"container": ("ps", "-a", "--format", "{{.Names}}"), "network": ("network", "ls", "--format", "{{.Name}}"),
         "volume": ("volume", "ls", "--format", "{{.Name}}")}
_REMOVE = {"container": ("rm", "-f", "-t", "0"), "network": ("network", "rm", "-f"), "volume": ("volume", "rm", "-f")}


def labelled(label: str) -> list[str]:
    """Every container, network and volume carrying `label` (key=value), as "kind name"."""
    found = []
    for kind, listing in _LIST.items():
        out = podman_sync(*listing, "--filter", f"label={label}", check=False).out
        found += [f"{kind} {name}" for name in out.split() if name]
    return found


def remove_labelled(label: str) -> list[str]:
    """Remove what `labelled` finds (containers first: a network in use cannot go); returns what it removed."""
    found = labelled(label)
    for entry in found:
        kind, name = entry.split(" ", 1)
        podman_sync(*_REMOVE[kind], name, check=False)
    return found
