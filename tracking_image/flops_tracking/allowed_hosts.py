"""Which Host headers the server answers (MLflow's --allowed-hosts, its DNS-rebinding guard), and learning the
ones known only after the server runs.

MLflow reads --allowed-hosts once, at start. On Oakestra people and the operator reach the server at its
worker's public IP and host port, which nobody knows before the instance is scheduled; the plan therefore lists
the service address (round-robin IP) and the entrypoint adds loopback, and the operator, once it sees the
public address, writes it to the project experiment's `flops.allowed-hosts` tag (through an address the
server already accepts). The entrypoint reads that tag over loopback and restarts MLflow with the address added.
Only host[:port] values are taken: no wildcard, no empty entry.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Sequence

log = logging.getLogger("flops_tracking")

OPTION = "--allowed-hosts"
MAX_ANNOUNCED = 8
# A DNS name or IPv4 address, or a bracketed IPv6 one, with an optional port: nothing fnmatch would expand.
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def valid_host(value: str) -> bool:
    return bool(_HOST.match(value))


def parse(value: str | None) -> tuple[str, ...]:
    """The hosts a tag value announces, in order, without duplicates; invalid entries are dropped (and said)."""
    hosts: list[str] = []
    for entry in (value or "").split(","):
        entry = entry.strip()
        if not entry or entry in hosts:
            continue
        if not valid_host(entry):
            log.warning("ignoring %r in the allowed-hosts tag: not host[:port]", entry)
            continue
        hosts.append(entry)
    return tuple(hosts[:MAX_ANNOUNCED])


def option(argv: Sequence[str], name: str) -> str | None:
    args = list(argv)
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def with_option(argv: Sequence[str], name: str, value: str) -> list[str]:
    out = list(argv)
    if name in out:
        out[out.index(name) + 1] = value
    else:
        out += [name, value]
    return out


def base_hosts(argv: Sequence[str]) -> tuple[str, ...]:
    """--allowed-hosts as given, plus loopback at the server's port (the entrypoint's own reads come from there).
    `*` stays `*`: everything is allowed already."""
    given = tuple(h.strip() for h in (option(argv, OPTION) or "").split(",") if h.strip())
    if "*" in given:
        return ("*",)
    port = option(argv, "--port") or "5000"
    return merged(given, (f"127.0.0.1:{port}", f"localhost:{port}"))


def merged(base: Sequence[str], announced: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*base, *announced]))


def read_tag(port: str, experiment: str, tag: str, login: tuple[str, str], timeout: float = 5.0) -> str | None:
    """The tag's value on the project's experiment, read over loopback as the admin; None if the server does not
    answer yet or has no such tag."""
    query = urllib.parse.urlencode({"experiment_name": experiment})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?{query}")
    request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            found = json.load(response)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors; ValueError: not JSON
        log.debug("allowed-hosts tag not readable yet: %s", exc)
        return None
    tags = (found.get("experiment") or {}).get("tags") or []
    return next((t.get("value") for t in tags if t.get("key") == tag), None)
