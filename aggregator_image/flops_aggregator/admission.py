"""The SuperLink's TLS and its admitted SuperNodes (contract.FlowerAdmission).

The aggregator holds its own TLS key and the certificate the operator issued for it, and the project's CA
certificate: nothing that could issue a certificate or derive a learner's key. A learner is admitted by the
certificate it presents (flops_aggregator.enrollment): one the project's CA issued, naming the learner's partition,
for the key its SuperNode signs with. The aggregator registers that key over the SuperLink's Control API for the
partitions below the learner count it was asked for, and Flower refuses every SuperNode whose key is not registered.

A learner's key is replaced with its service (flops_operator.plan.flower_keys): a newer certificate for the same
partition (a larger serial number, flops_runtime.pki) supersedes the key registered for it, which is unregistered
at once; an older one is refused. Learners added or removed while training: the operator sets LEARNERS_TAG on the
running MLflow run to the project's learner count; the ServerApp, which reads the run at every round boundary and
every few seconds, hands the count to the entrypoint through LEARNERS_FILE, and the entrypoint registers the keys of
the learners now counted in and unregisters the ones counted out.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator, Protocol

from flops_runtime import pki

from .contract import FlowerAdmission

log = logging.getLogger("flops_aggregator")

LEARNERS_TAG = "flops.learners"
LEARNERS_FILE = "learners-wanted.json"


def request_learners(workdir: Path, tags: dict[str, str]) -> None:
    """In the ServerApp: pass the learner count the operator asks for on to the entrypoint."""
    value = tags.get(LEARNERS_TAG)
    if value is None:
        return
    if not value.isdigit() or int(value) < 1:
        log.warning("ignoring tag %s=%r: not a learner count", LEARNERS_TAG, value)
        return
    path = workdir / LEARNERS_FILE
    try:
        if json.loads(path.read_text()).get("learners") == int(value):
            return
    except (OSError, ValueError):
        pass
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps({"learners": int(value)}))
    os.replace(partial, path)  # the entrypoint never reads half a file


def requested_learners(workdir: Path) -> int | None:
    """In the entrypoint: the learner count last asked for, if any."""
    try:
        return int(json.loads((workdir / LEARNERS_FILE).read_text())["learners"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path

    def superlink_args(self) -> list[str]:
        return ["--ssl-ca-certfile", str(self.ca_cert), "--ssl-certfile", str(self.cert),
                "--ssl-keyfile", str(self.key), "--enable-supernode-auth"]


def write_tls(admission: FlowerAdmission, directory: Path) -> TlsFiles:
    """The CA certificate, the SuperLink's certificate and its key, in files readable by this user only."""
    return TlsFiles(ca_cert=pki.write_private(directory / "ca.pem", pki.pem(admission.ca_cert)),
                    cert=pki.write_private(directory / "superlink.pem", pki.pem(admission.cert)),
                    key=pki.write_private(directory / "superlink.key", pki.pem(admission.key)))


def check(admission: FlowerAdmission) -> None:
    """ValueError unless the values make a usable admission: the SuperLink's certificate is for its key and was
    issued by the CA."""
    pki.check_server_certificate(admission.ca_cert, admission.cert, admission.key)


class KeyInUse(Exception):
    """The SuperLink had this key registered before: Flower never registers a public key twice (an unregistered
    node keeps it). The learner needs a new key, which the operator gives every learner service it creates."""


class Registry(Protocol):
    """Where admitted keys are registered: the SuperLink's Control API (FlowerRegistry), a fake in tests. register
    raises KeyInUse for a key registered before."""

    def register(self, public_key_openssh: str, name: str) -> int: ...

    def unregister(self, node_id: int) -> None: ...


class FlowerRegistry:
    """Flower's Control API client, as `flwr supernode register` builds it (flwr 1.42), kept open: one client for
    every learner instead of one `flwr` process (about 1 s of CPU) per learner."""

    def __init__(self, address: str, ca_file: Path) -> None:
        self.address, self.ca_file = address, ca_file
        self._client = None

    def _connected(self):
        if self._client is None:
            from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
            from flwr.supercore.control import ControlHttpClient
            from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

            self._client = ControlHttpClient.from_server_address(
                server_address=self.address, insecure=False, root_certificates=str(self.ca_file),
                interceptors=[CliClientHttpInterceptor(), RuntimeVersionHttpInterceptor(component_name="flwr CLI")])
        return self._client

    @contextmanager
    def _call(self) -> Iterator:
        try:
            yield self._connected()
        except Exception:
            self.close()  # a broken client is not used again
            raise

    def register(self, public_key_openssh: str, name: str) -> int:
        from cryptography.hazmat.primitives import serialization
        from flwr.proto.control_pb2 import RegisterNodeRequest
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        public = serialization.load_ssh_public_key(public_key_openssh.encode())
        try:
            with self._call() as client:
                reply = client.RegisterNode(request=RegisterNodeRequest(public_key=public_key_to_bytes(public),
                                                                        name=name))
        except Exception as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) == 412:  # PUBLIC_KEY_ALREADY_IN_USE
                raise KeyInUse(f"{name}'s key was registered with this SuperLink before") from exc
            raise
        if not reply.node_id:
            raise RuntimeError(f"the SuperLink did not register {name}")
        return reply.node_id

    def unregister(self, node_id: int) -> None:
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        with self._call() as client:
            client.UnregisterNode(request=UnregisterNodeRequest(node_id=node_id))

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class Verdict(str, Enum):
    admitted = "admitted"
    """Its key is registered: the SuperNode may join."""
    waiting = "waiting"
    """Valid, for a learner above the learner count: registered once the count takes it in."""
    superseded = "superseded"
    """A newer certificate for the same learner is held: this key is not admitted."""
    refused = "refused"
    """Not a learner certificate of the project's CA."""


@dataclass
class _Learner:
    cert: pki.LearnerCertificate
    node: int | None = None


class Admitted:
    """The learners one SuperLink admits: the newest certificate presented for each partition, and the Flower node
    of those registered (the partitions below `count`). Safe to call from several threads."""

    def __init__(self, registry: Registry, ca_cert: str, count: int) -> None:
        self.registry, self.ca_cert, self.count = registry, ca_cert, count
        self.learners: dict[int, _Learner] = {}
        self._lock = threading.Lock()

    @property
    def nodes(self) -> dict[int, int]:
        """partition -> Flower node id of the registered learners."""
        return {p: learner.node for p, learner in self.learners.items() if learner.node is not None}

    def offer(self, certificate: str) -> tuple[Verdict, str]:
        """A learner presents its certificate. Raises only when the Control API fails (the learner asks again)."""
        try:
            cert = pki.read_learner_certificate(self.ca_cert, certificate)
        except ValueError as exc:
            log.warning("refused a learner certificate: %s", exc)
            return Verdict.refused, str(exc)
        name = f"learner-{cert.partition}"
        with self._lock:
            held = self.learners.get(cert.partition)
            if held is not None and held.cert.public_key == cert.public_key:
                held.cert = max(held.cert, cert, key=lambda c: c.serial)  # the same key, certified again
            elif held is not None and cert.serial < held.cert.serial:
                log.warning("refused %s's superseded key: a newer certificate is held for it", name)
                return Verdict.superseded, f"a newer certificate for {name} is held"
            else:
                if held is not None and held.node is not None:
                    self.registry.unregister(held.node)
                    log.info("%s's key renewed: node %d unregistered", name, held.node)
                    held.node = None
                self.learners[cert.partition] = held = _Learner(cert)
            if cert.partition >= self.count:
                return Verdict.waiting, f"{name} is above the learner count ({self.count})"
            if held.node is None:
                try:
                    held.node = self.registry.register(cert.openssh(), name)
                except KeyInUse as exc:
                    del self.learners[cert.partition]
                    log.warning("%s", exc)
                    return Verdict.superseded, f"{exc}: it needs a new key"
                self._log()
            return Verdict.admitted, f"{name} admitted (node {held.node})"

    def admit(self, count: int) -> None:
        """The learner count changed: register the held learners below it, unregister those above."""
        with self._lock:
            changed = False
            try:
                for partition, learner in sorted(self.learners.items()):
                    if partition < count and learner.node is None:
                        try:
                            learner.node = self.registry.register(learner.cert.openssh(), f"learner-{partition}")
                        except KeyInUse as exc:  # counted out and in again with the same key: it needs a new one
                            del self.learners[partition]
                            log.warning("%s: it needs a new key", exc)
                            continue
                        changed = True
                    elif partition >= count and learner.node is not None:
                        self.registry.unregister(learner.node)
                        learner.node = None
                        changed = True
                self.count = count  # only once all went through: a failure is tried again at the next look
            finally:
                if changed:
                    self._log()

    def _log(self) -> None:
        log.info("admitted learners: %s", ", ".join(f"learner-{p} (node {n})" for p, n in sorted(self.nodes.items()))
                 or "none")
