"""Oakestra names and addresses derived from the project UID and logical service names (pure).

Oakestra names must match ^[a-zA-Z0-9]{1,30}$ and the four-part job_name is global across users
(a clash silently takes over someone else's service), so the UID hash makes them unique; the
readable part is only for people looking at Oakestra's dashboard.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import Counter
from typing import Iterable, Iterator

from ...models import ProjectRef

NAME = re.compile(r"^[a-zA-Z0-9]{1,30}$")
SERVICE_NAMESPACE = "flops"
# Oakestra's network plugin hands out 10.30.0.0/16 from its first address upwards to services that
# do not choose one; in that range ours stay above 10.30.64.0, clear of those.
SERVICE_SUBNET = "10.30.0.0/16"
_AUTO_ASSIGNED = 1 / 4


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _alnum(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]", "", text)


def app_name(project: ProjectRef) -> str:
    return (_alnum(project.name)[:18] or "flops") + _digest("app", project.uid)[:12]


def app_namespace(project: ProjectRef) -> str:
    return (_alnum(project.namespace)[:22] or "ns") + _digest("ns", project.uid)[:8]


def service_name(logical: str) -> str:
    """learner-12 -> learner12 + a hash of the exact logical name (learner-12 and learner12 differ)."""
    return (_alnum(logical)[:24] or "svc") + _digest("svc", logical)[:6]


def rr_ip_candidates(project_uid: str, logical: str, subnet: str = SERVICE_SUBNET) -> Iterator[str]:
    """The service's round-robin IPs in order of preference: deterministic, inside `subnet` (never its
    network or broadcast address; for a /17 or larger, above the quarter the plugin fills itself)."""
    network = ipaddress.IPv4Network(subnet)
    first = int(network.num_addresses * _AUTO_ASSIGNED) if network.prefixlen <= 17 else 1
    count = network.num_addresses - 1 - first
    if count < 1:
        raise ValueError(f"service subnet {subnet} has no addresses to choose from")
    attempt = 0
    while True:
        value = int(_digest("rr", project_uid, logical, str(attempt))[:8], 16)
        address = network.network_address + first + value % count
        if int(address) & 0xFF not in (0, 255):  # .0/.255 inside a large range: legal, but confusing
            yield str(address)
        attempt += 1


def rr_ip_preferences(project_uid: str, logical: str, recorded: Iterable[str] = (),
                      subnet: str = SERVICE_SUBNET) -> Iterator[str]:
    """Addresses to ask for, each once: those the service's peers recorded for it (most often
    recorded first), then its own candidates."""
    seen = set()
    for address, _ in Counter(a for a in recorded if valid_rr_ip(a, subnet)).most_common():
        seen.add(address)
        yield address
    for address in rr_ip_candidates(project_uid, logical, subnet):
        if address not in seen:
            seen.add(address)
            yield address


def valid_rr_ip(address: str, subnet: str = SERVICE_SUBNET) -> bool:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return ip in ipaddress.IPv4Network(subnet)


def host_port(project_uid: str, logical: str, port: str, port_range: tuple[int, int]) -> int:
    """The worker host port a published container port is mapped to."""
    low, high = port_range
    return low + int(_digest("hostport", project_uid, logical, port)[:8], 16) % (high - low)
