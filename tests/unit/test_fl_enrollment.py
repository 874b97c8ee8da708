"""The aggregator admits exactly the keys the learners present in certificates of the project's CA
(flops_aggregator.admission, .enrollment; flops_learner.enrollment), over real HTTPS on loopback, with a stand-in for
the SuperLink's Control API: a newer certificate for a learner supersedes its key (unregistered at once) and the older
one is refused from then on; learners above the count wait; anything the CA did not issue is refused."""

from __future__ import annotations

import threading

import pytest

from flops_aggregator.admission import Admitted, KeyInUse, Verdict, write_tls
from flops_aggregator.enrollment import Enrollment
from flops_learner.enrollment import enroll, enroll_until_answered
from flops_runtime import pki
from tests.projects import LoopbackPki


class Registry:
    """The SuperLink's registered keys: node id -> OpenSSH public key. As Flower's, it never takes a key twice."""

    def __init__(self) -> None:
        self.nodes: dict[int, str] = {}
        self.seen: set[str] = set()
        self.next = 100
        self.failing = False
        self.lock = threading.Lock()

    def register(self, public_key_openssh: str, name: str) -> int:
        if self.failing:
            raise RuntimeError("Control API down")
        with self.lock:
            if public_key_openssh in self.seen:
                raise KeyInUse(f"{name}'s key was registered with this SuperLink before")
            self.seen.add(public_key_openssh)
            self.next += 1
            self.nodes[self.next] = public_key_openssh
            return self.next

    def unregister(self, node_id: int) -> None:
        if self.failing:
            raise RuntimeError("Control API down")
        del self.nodes[node_id]

    def keys(self) -> set[str]:
        return set(self.nodes.values())


def public(pki_: LoopbackPki, partition: int) -> str:
    return pki.read_learner_certificate(pki.ca_certificate(pki_.values["flower-ca"]),
                                        pki_.learner(partition).supernode_cert).openssh()


def test_exactly_the_presented_keys_below_the_count_are_registered():
    project = LoopbackPki()
    registry = Registry()
    admitted = Admitted(registry, project.aggregator().ca_cert, count=2)
    assert registry.keys() == set()  # nothing is admitted before a learner presents its certificate
    certs = {i: project.learner(i).supernode_cert for i in range(3)}
    assert admitted.offer(certs[0])[0] is Verdict.admitted
    assert admitted.offer(certs[0])[0] is Verdict.admitted  # again: nothing changes
    assert admitted.offer(certs[2])[0] is Verdict.waiting  # above the count
    assert registry.keys() == {public(project, 0)} and len(registry.nodes) == 1
    assert admitted.offer(certs[1])[0] is Verdict.admitted
    admitted.admit(3)  # the operator counts learner-2 in
    assert registry.keys() == {public(project, i) for i in range(3)}
    admitted.admit(1)
    assert registry.keys() == {public(project, 0)} and admitted.nodes.keys() == {0}
    # Counted in again before the operator replaced them: Flower takes no key twice; they need new keys.
    admitted.admit(3)
    assert admitted.count == 3 and registry.keys() == {public(project, 0)} and set(admitted.learners) == {0}
    verdict, message = admitted.offer(certs[1])
    assert verdict is Verdict.superseded and "needs a new key" in message


def test_the_same_key_certified_again_stays_registered_under_its_node():
    project = LoopbackPki()
    registry = Registry()
    admitted = Admitted(registry, project.aggregator().ca_cert, count=1)
    first, again = project.learner(0).supernode_cert, project.learner(0).supernode_cert  # one key, two certificates
    assert admitted.offer(again)[0] is Verdict.admitted and admitted.offer(first)[0] is Verdict.admitted
    assert len(registry.nodes) == 1 and len(registry.seen) == 1


def test_a_replaced_learners_new_key_supersedes_the_old_which_is_refused_from_then_on():
    project = LoopbackPki()
    registry = Registry()
    admitted = Admitted(registry, project.aggregator().ca_cert, count=2)
    old = project.learner(1).supernode_cert
    old_key = public(project, 1)
    assert admitted.offer(old)[0] is Verdict.admitted
    project.renew("flower-learner-key-1")  # the operator replaced learner-1: a new key, a certificate issued later
    new = project.learner(1).supernode_cert
    assert admitted.offer(new)[0] is Verdict.admitted
    assert registry.keys() == {public(project, 1)} and old_key not in registry.keys()
    verdict, message = admitted.offer(old)
    assert verdict is Verdict.superseded and "newer certificate for learner-1" in message
    assert registry.keys() == {public(project, 1)}


def test_certificates_the_project_ca_did_not_issue_are_refused():
    project, stranger = LoopbackPki(), LoopbackPki()
    registry = Registry()
    admitted = Admitted(registry, project.aggregator().ca_cert, count=2)
    ca = project.values["flower-ca"]
    server, _ = pki.server_certificate(ca, ["127.0.0.1"], key=pki.new_key())
    for cert in (stranger.learner(0).supernode_cert, project.aggregator().ca_cert, pki.one_line(server), "junk"):
        assert admitted.offer(cert)[0] is Verdict.refused
    assert registry.keys() == set()


def test_learners_enroll_over_https_and_only_the_project_ca_is_trusted(tmp_path):
    project, stranger = LoopbackPki(), LoopbackPki()
    registry = Registry()
    admission = project.aggregator()
    tls = write_tls(admission, tmp_path / "aggregator")
    admitted = Admitted(registry, admission.ca_cert, count=1)
    server = Enrollment(admission.enroll_address, tls, admitted.offer)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(pki.pem(admission.ca_cert))
    learner = project.learner(0)
    try:
        assert enroll(learner.enroll_address, learner.supernode_cert, ca_file).verdict == "admitted"
        assert enroll(learner.enroll_address, project.learner(1).supernode_cert, ca_file).verdict == "waiting"
        answer = enroll(learner.enroll_address, stranger.learner(0).supernode_cert, ca_file)
        assert answer.verdict == "refused" and "not issued by the project's CA" in answer.message
        # The Control API fails: the learner is told to ask again, and nothing changed meanwhile.
        project.renew("flower-learner-key-0")
        renewed = project.learner(0).supernode_cert
        registry.failing = True
        assert enroll(learner.enroll_address, renewed, ca_file).verdict == "retry"
        with pytest.raises(RuntimeError):
            admitted.admit(2)
        assert admitted.count == 1 and registry.keys() == {public_of(ca_file, learner.supernode_cert)}
        registry.failing = False
        assert enroll_until_answered(learner.enroll_address, renewed, ca_file, max_wait=5).verdict == "admitted"
        # A learner that trusts another CA does not talk to this aggregator at all.
        other_ca = tmp_path / "other.pem"
        other_ca.write_text(pki.pem(stranger.aggregator().ca_cert))
        with pytest.raises(OSError):
            enroll(learner.enroll_address, renewed, other_ca)
    finally:
        server.close()
    assert registry.keys() == {public_of(ca_file, renewed)}
    assert enroll_until_answered(learner.enroll_address, renewed, ca_file, max_wait=1) is None  # nobody answers


def public_of(ca_file, cert: str) -> str:
    return pki.read_learner_certificate(ca_file.read_text(), cert).openssh()
