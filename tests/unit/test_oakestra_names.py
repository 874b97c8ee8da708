"""Oakestra names and addresses: valid, deterministic, unique where Oakestra needs them to be."""

import ipaddress
import itertools

import pytest

from flops_operator.models import ProjectRef
from flops_operator.platforms.oakestra import names

REF = ProjectRef("team-a", "digits-with-a-very-long-project-name", "8d1f0c2e-3b4a-4c5d-9e6f-001122334455")


def test_app_names_are_valid_deterministic_and_follow_the_uid():
    for fn in (names.app_name, names.app_namespace):
        value = fn(REF)
        assert names.NAME.match(value), value
        assert fn(REF) == value
        assert fn(ProjectRef(REF.namespace, REF.name, REF.uid + "x")) != value
    assert names.app_name(REF).startswith("digitswithaverylon")
    assert names.NAME.match(names.app_name(ProjectRef("-", "-", "u")))


def test_service_names_keep_logical_names_apart():
    logical = ["backend-store", "artifact-store", "tracking-server", "aggregator", "model-server",
               "learner-1", "learner-12", "learner12", "learner-1-2", *(f"learner-{i}" for i in range(1000))]
    derived = [names.service_name(n) for n in logical]
    assert all(names.NAME.match(d) for d in derived)
    assert len(set(derived)) == len(set(logical))
    assert names.service_name("learner-12").startswith("learner12")
    assert names.NAME.match(names.service_name("x" * 200))


def test_rr_ip_candidates_are_overlay_addresses_in_a_fixed_order():
    first = [ip for ip, _ in zip(names.rr_ip_candidates(REF.uid, "aggregator"), range(50))]
    assert first == [ip for ip, _ in zip(names.rr_ip_candidates(REF.uid, "aggregator"), range(50))]
    assert len(set(first)) > 45
    for ip in first:
        address = ipaddress.IPv4Address(ip)
        assert address in ipaddress.IPv4Network("10.30.64.0/18") or address in ipaddress.IPv4Network("10.30.128.0/17")
        assert not ip.endswith((".0", ".255"))
        assert names.valid_rr_ip(ip)
    assert next(names.rr_ip_candidates(REF.uid, "learner-0")) != next(names.rr_ip_candidates(REF.uid, "learner-1"))
    assert not names.valid_rr_ip("192.168.1.1") and not names.valid_rr_ip("10.30.1")


def test_host_ports_are_in_range_and_stable():
    port = names.host_port(REF.uid, "tracking-server", "http", (30000, 40000))
    assert 30000 <= port < 40000
    assert port == names.host_port(REF.uid, "tracking-server", "http", (30000, 40000))


@pytest.mark.parametrize("recorded, first", [
    ([], []),
    (["10.30.70.7"], ["10.30.70.7"]),
    (["10.30.70.7", "10.30.80.8", "10.30.80.8"], ["10.30.80.8", "10.30.70.7"]),  # most often recorded first
    (["192.168.1.1", "10.30.1"], []),  # not an Oakestra service address: ignored
])
def test_rr_ip_preferences_put_recorded_addresses_first_then_the_candidates_each_once(recorded, first):
    own = list(itertools.islice(names.rr_ip_candidates("uid-1", "aggregator"), 10))
    got = list(itertools.islice(names.rr_ip_preferences("uid-1", "aggregator", recorded), len(first) + 5))
    assert got == (first + [a for a in own if a not in first])[:len(first) + 5]


def test_a_recorded_address_that_is_also_a_candidate_is_not_asked_twice():
    own = list(itertools.islice(names.rr_ip_candidates("uid-1", "aggregator"), 3))
    got = list(itertools.islice(names.rr_ip_preferences("uid-1", "aggregator", [own[1]]), 3))
    assert got == [own[1], own[0], own[2]]
