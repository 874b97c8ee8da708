"""The SuperLink's TLS and its admitted SuperNodes (contract.FlowerAdmission).

At each start the aggregator issues its SuperLink a new certificate from the project's CA, for the addresses the
learners use and for loopback (where its own `flwr` commands and Flower's SuperExec reach it), and registers the
public keys of exactly the project's learners over the SuperLink's Control API. Flower then refuses every
SuperNode whose key is not registered.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from flops_runtime import pki

from .contract import FlowerAdmission

log = logging.getLogger("flops_aggregator")

# Learners added or removed while training (spec.learners.replicas applied in place): the operator sets this tag
# on the running MLflow run to the project's learner count; the ServerApp, which reads the run at every round
# boundary and every few seconds, hands the count to the entrypoint through LEARNERS_FILE, and the entrypoint
# registers the new learners' keys and unregisters the removed ones'.
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
    """The CA certificate and a new server certificate and key, in files readable by this user only."""
    cert, key = pki.server_certificate(admission.ca, admission.host_list)
    return TlsFiles(ca_cert=pki.write_private(directory / "ca.pem", pki.pem(pki.ca_certificate(admission.ca))),
                    cert=pki.write_private(directory / "superlink.pem", cert),
                    key=pki.write_private(directory / "superlink.key", key))


@dataclass
class Admitted:
    """The learners registered with one SuperLink: partition -> Flower node id."""

    address: str
    ca_file: Path
    seed: str
    nodes: dict[int, int] = field(default_factory=dict)

    def _client(self):
        # Flower's Control API client, as `flwr supernode register` builds it (flwr 1.42): one client for all
        # learners instead of one `flwr` process (about 1 s of CPU) per learner.
        from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
        from flwr.supercore.control import ControlHttpClient

        return ControlHttpClient.from_server_address(
            server_address=self.address, insecure=False, root_certificates=str(self.ca_file),
            interceptors=[CliClientHttpInterceptor(), RuntimeVersionHttpInterceptor(component_name="flwr CLI")])

    def admit(self, learners: int) -> None:
        """Register learners 0..learners-1 that are not yet registered; unregister the ones above."""
        from cryptography.hazmat.primitives import serialization
        from flwr.proto.control_pb2 import RegisterNodeRequest, UnregisterNodeRequest
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        wanted = set(range(learners))
        if wanted == set(self.nodes):
            return
        client = self._client()
        try:
            for partition in sorted(wanted - set(self.nodes)):
                public = serialization.load_ssh_public_key(pki.learner_public_key(self.seed, partition).encode())
                reply = client.RegisterNode(request=RegisterNodeRequest(public_key=public_key_to_bytes(public),
                                                                        name=f"learner-{partition}"))
                if not reply.node_id:
                    raise RuntimeError(f"the SuperLink did not register learner-{partition}")
                self.nodes[partition] = reply.node_id
            for partition in sorted(set(self.nodes) - wanted):
                client.UnregisterNode(request=UnregisterNodeRequest(node_id=self.nodes.pop(partition)))
        finally:
            client.close()
        log.info("admitted learners: %s", ", ".join(f"learner-{p} (node {n})" for p, n in sorted(self.nodes.items())))
