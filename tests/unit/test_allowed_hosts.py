"""The Host headers the project's tracking server answers: what the entrypoint takes from the allowed-hosts tag
and adds to --allowed-hosts (flops_tracking.allowed_hosts), and when the operator announces a public address
(status.announce_via)."""

from __future__ import annotations

import pytest

from flops_operator.models import parse_project
from flops_operator.plan.desired import desired
from flops_operator.plan.services import Role
from flops_operator.platforms.base import Observation, ObservedService, ServiceState
from flops_operator.status import announce_via
from flops_tracking import allowed_hosts


@pytest.mark.parametrize("value, hosts", [
    ("192.0.2.10:31000", ("192.0.2.10:31000",)),
    (" 192.0.2.10:31000 , worker-1.example.org:31000 ", ("192.0.2.10:31000", "worker-1.example.org:31000")),
    ("[2001:db8::1]:31000", ("[2001:db8::1]:31000",)),
    ("192.0.2.10:31000,192.0.2.10:31000", ("192.0.2.10:31000",)),
    ("", ()),
    (None, ()),
    (",,", ()),
    # Wildcards would widen MLflow's guard (it fnmatches entries with '*'): never taken.
    ("*", ()),
    ("*:31000", ()),
    ("192.168.*", ()),
    ("evil?.example", ()),
    ("192.0.2.10:31000,*", ("192.0.2.10:31000",)),
    ("host with space", ()),
    ("-leading-dash.example", ()),
    (",".join(f"10.0.0.{i}:1" for i in range(12)), tuple(f"10.0.0.{i}:1" for i in range(8))),
])
def test_the_tag_gives_only_plain_hosts(value, hosts):
    assert allowed_hosts.parse(value) == hosts


@pytest.mark.parametrize("argv, base", [
    (["--host", "0.0.0.0", "--port", "5000", "--allowed-hosts", "10.30.0.7:5000"],
     ("10.30.0.7:5000", "127.0.0.1:5000", "localhost:5000")),
    (["--port", "4003", "--allowed-hosts", "127.0.0.1:4003,localhost:4003"], ("127.0.0.1:4003", "localhost:4003")),
    (["--allowed-hosts", "10.30.0.7:5000"], ("10.30.0.7:5000", "127.0.0.1:5000", "localhost:5000")),
    (["--port", "5000", "--allowed-hosts", "*"], ("*",)),
    (["--port", "5000"], ("127.0.0.1:5000", "localhost:5000")),
])
def test_the_base_list_is_the_given_one_plus_loopback(argv, base):
    assert allowed_hosts.base_hosts(argv) == base


def test_announced_hosts_come_after_the_base_and_replace_the_option():
    hosts = allowed_hosts.merged(("10.30.0.7:5000", "127.0.0.1:5000"), ("192.0.2.10:31000", "127.0.0.1:5000"))
    assert hosts == ("10.30.0.7:5000", "127.0.0.1:5000", "192.0.2.10:31000")
    argv = allowed_hosts.with_option(["--port", "5000", "--allowed-hosts", "x"], "--allowed-hosts", ",".join(hosts))
    assert argv == ["--port", "5000", "--allowed-hosts", "10.30.0.7:5000,127.0.0.1:5000,192.0.2.10:31000"]


def test_the_plan_lists_the_service_address_and_asks_for_the_tag():
    p = parse_project({"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                       "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-1"},
                       "spec": {"task": {"name": "digits-mlp"}}})
    tracking = next(s for s in desired(p, training_done=False) if s.role is Role.tracking_server)
    command = list(tracking.command)
    assert command[command.index("--allowed-hosts") + 1] == "{{host:tracking-server}}:{{port:http}}"
    assert dict(tracking.env)["FLOPS_ALLOWED_HOSTS_TAG"] == "flops.allowed-hosts"


def _project(**tracking):
    return parse_project({"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                          "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-1"},
                          "spec": {"task": {"name": "digits-mlp"}, **({"tracking": tracking} if tracking else {})}})


def _seen(state=ServiceState.running, address="10.30.0.7:5000", external="192.0.2.10:31000"):
    return Observation({"tracking-server": ObservedService("tracking-server", Role.tracking_server, state, "h",
                                                           address=address, external_address=external)})


@pytest.mark.parametrize("case, project, observation, via", [
    ("published elsewhere (Oakestra)", _project(), _seen(), "10.30.0.7:5000"),
    ("reached where it is published (local)", _project(), _seen(address="127.0.0.1:4003", external="127.0.0.1:4003"),
     None),
    ("not running yet", _project(), _seen(state=ServiceState.starting), None),
    ("no public address yet", _project(), _seen(external=None), None),
    ("no service address", _project(), _seen(address=None), None),
    ("no tracking server", _project(), Observation({}), None),
    ("an existing MLflow", _project(uri="https://mlflow.example.org"), _seen(), None),
])
def test_when_the_operator_announces_the_public_address(case, project, observation, via):
    assert announce_via(project, observation) == via, case
