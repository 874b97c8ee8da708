"""Placeholders in service commands and env, resolved by each platform at deploy time.

    {{addr:SERVICE:PORT}}  host:port where the project's other services reach SERVICE's PORT
    {{host:SERVICE}}       host of SERVICE
    {{port:PORT}}          the port this service listens on for PORT
    {{bind}}               the interface this service listens on
    {{secret:NAME}}        a generated project credential (never logged, never in status)
    {{cacert:CA}}          the certificate (public) of the CA bundle credential CA (flops_runtime.pki)
    {{servercert:CA:KEY:SERVICE}}
                           a TLS certificate the CA issues now for the key credential KEY, valid for SERVICE's host
                           (and loopback): the aggregator's SuperLink certificate
    {{learnercert:CA:KEY:N}}
                           learner N's certificate the CA issues now for the key credential KEY
    {{workdir}}            a directory this service may write to
    {{registry}}           where the platform's workers pull the project's images from (and built ones go)
"""

from __future__ import annotations

import re
from typing import Protocol

from flops_runtime import pki

from .images import IMAGE_REGISTRY
from .services import ServiceSpec

_PART = r"(?::([A-Za-z0-9_.-]+))?"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z]+)" + _PART * 3 + r"\s*\}\}")


class Resolver(Protocol):
    def address(self, service: str, port: str) -> str: ...
    def host(self, service: str) -> str: ...
    def own_port(self, port: str) -> int: ...
    def bind(self) -> str: ...
    def secret(self, name: str) -> str: ...
    def workdir(self) -> str: ...


def render(text: str, resolver: Resolver) -> str:
    def replace(match: re.Match[str]) -> str:
        kind, a, b, c = match.groups()
        if c and kind not in ("servercert", "learnercert"):
            raise ValueError(f"unknown placeholder {match.group(0)!r}")
        if kind == "addr" and a and b:
            return resolver.address(a, b)
        if kind == "host" and a and not b:
            return resolver.host(a)
        if kind == "port" and a and not b:
            return str(resolver.own_port(a))
        if kind == "bind" and not a:
            return resolver.bind()
        if kind == "secret" and a and not b:
            return resolver.secret(a)
        if kind == "cacert" and a and not b:
            return pki.ca_certificate(resolver.secret(a))
        if kind == "servercert" and a and b and c:
            cert, _ = pki.server_certificate(resolver.secret(a), [resolver.host(c)], key=resolver.secret(b))
            return pki.one_line(cert)
        if kind == "learnercert" and a and b and c and c.isdigit():
            return pki.learner_certificate(resolver.secret(a), resolver.secret(b), int(c))
        if kind == "workdir" and not a:
            return resolver.workdir()
        if kind == "registry" and not a:
            # Only a platform that runs images has a registry; the plan's default prefix elsewhere.
            registry = getattr(resolver, "registry", None)
            return registry() if registry is not None else IMAGE_REGISTRY
        raise ValueError(f"unknown placeholder {match.group(0)!r}")

    return _PLACEHOLDER.sub(replace, text)


def render_service(service: ServiceSpec, resolver: Resolver) -> tuple[list[str], dict[str, str]]:
    """The service's command and env with every placeholder resolved."""
    command = [render(part, resolver) for part in service.command]
    env = {key: render(value, resolver) for key, value in service.env}
    return command, env


def referenced_services(service: ServiceSpec) -> set[str]:
    """Other services whose addresses this service's command/env use."""
    names = set()
    for text in [*service.command, *(v for _, v in service.env)]:
        for kind, a, _, _ in _PLACEHOLDER.findall(text):
            if kind in ("addr", "host"):
                names.add(a)
    return names - {service.name}
