"""Reading Oakestra service documents: per-instance states, negative scheduling, instance calls."""

import pytest

from flops_operator.platforms.base import ServiceState
from flops_operator.platforms.oakestra.history import Track
from flops_operator.platforms.oakestra.interpret import judge, observed, parse
from flops_operator.platforms.oakestra.sla import META


def doc(status=None, instances=(), detail="Waiting for scheduling decision", host_ports=None):
    d = {"microserviceID": "6b07d514812ccad2b5ee8dca", "microservice_name": "learner0abc123", "RR_ip": "10.30.70.1",
         "instance_list": [{"instance_number": n, "status": s, "status_detail": det, "publicip": "192.0.2.10"}
                           for n, s, det in instances],
         META: {"service": "learner-0", "spec_hash": "h", "role": "learner", "ports": {"clientappio": 9094},
                "host_ports": host_ports or {}}}
    if status is not None:
        d["status"], d["status_detail"] = status, detail
    return parse(d)


def verdict(svc, now=1000.0, failing=None, since=None, **readiness):
    """`failing`: instance number -> when the driver first saw its current (failing) status."""
    tracks = {i.number: Track(i.status, (failing or {}).get(i.number, now)) for i in svc.instances}
    return judge(svc, now=now, tracks=tracks, grace=120, unschedulable_since=since, unschedulable_retry=300,
                 **readiness)


def test_no_instance_and_no_request_asks_for_exactly_one():
    v = verdict(doc())
    assert (v.state, v.deploy, v.undeploy) == (ServiceState.pending, 1, ())


def test_a_pending_request_is_never_repeated():
    v = verdict(doc("REQUESTED"))
    assert (v.state, v.deploy) == (ServiceState.pending, 0)


def test_negative_scheduling_fails_in_oakestras_words_and_retries_only_after_a_while():
    v = verdict(doc("NoActiveClusterWithCapacity"))
    assert v.state is ServiceState.failed and "NoActiveClusterWithCapacity" in v.message
    assert v.deploy == 0 and v.unschedulable
    assert verdict(doc("TargetClusterNotFound"), now=1000, since=600).deploy == 1


def test_per_instance_status_wins_over_a_stale_job_status():
    assert verdict(doc("RUNNING", [(0, "CREATING", "")])).state is ServiceState.starting
    assert verdict(doc("CLUSTER_SCHEDULED", [(0, "RUNNING", "")])).state is ServiceState.running
    assert verdict(doc("NoActiveClusterWithCapacity", [(0, "RUNNING", "")])).state is ServiceState.running
    done = verdict(doc("RUNNING", [(0, "COMPLETED", "")]))
    assert (done.state, done.exit_code) == (ServiceState.completed, 0)


def test_failed_instances_fail_only_past_the_bound():
    svc = doc("FAILED", [(0, "FAILED", "No suitable worker found")])
    early = verdict(svc, now=1000, failing={0: 950})
    assert early.state is ServiceState.starting and "Oakestra re-deploys it" in early.message
    late = verdict(svc, now=1000, failing={0: 800})
    assert late.state is ServiceState.failed and "No suitable worker found" in late.message
    assert "instance 0 FAILED for 200s" in late.message


def test_surplus_instances_are_undeployed_highest_first_kept_lowest():
    v = verdict(doc("RUNNING", [(3, "RUNNING", ""), (1, "RUNNING", ""), (2, "CREATING", "")]))
    assert v.state is ServiceState.running and v.undeploy == (2, 3) and v.deploy == 0


def test_observed_addresses_use_rr_ip_and_public_ip_with_host_port():
    svc = doc("RUNNING", [(0, "RUNNING", "")], host_ports={"http": 31234})
    seen = observed(svc, verdict(svc), spec_hash="h")
    assert (seen.name, seen.address, seen.external_address) == ("learner-0", "10.30.70.1:9094", "192.0.2.10:31234")
    assert seen.service_id == "6b07d514812ccad2b5ee8dca" and seen.spec_hash == "h"


def test_a_one_shot_service_that_died_has_failed_its_run_with_its_last_log_lines():
    svc = parse({"microserviceID": "6b07d514812ccad2b5ee8dcb", "microservice_name": "aggregatorabc123",
                 "one_shot": True, "instance_list": [{"instance_number": 0, "status": "DEAD",
                                                     "logs": "starting\n\nround 2 of 9\nKilled\n"}],
                 META: {"service": "aggregator", "spec_hash": "h", "role": "aggregator"}})
    v = verdict(svc)
    assert v.state is ServiceState.failed
    assert "instance 0 DEAD: stopped before finishing its run" in v.message
    assert "last log lines: starting | round 2 of 9 | Killed" in v.message
    # The same death of a long-running service is Oakestra's to retry (within the grace).
    long_running = parse({**{"microserviceID": "6b07d514812ccad2b5ee8dcb", "microservice_name": "x"},
                          "instance_list": [{"instance_number": 0, "status": "DEAD", "logs": "boom"}]})
    assert verdict(long_running).state is ServiceState.starting


@pytest.mark.parametrize("held, state", [(0, ServiceState.starting), (9, ServiceState.starting),
                                         (10, ServiceState.running)])
def test_running_is_ready_only_once_held_for_the_stated_time(held, state):
    svc = doc("RUNNING", [(0, "RUNNING", "")])
    v = verdict(svc, now=1000, failing={0: 1000 - held}, ready_after=10)
    assert v.state is state
    if state is ServiceState.starting:
        assert f"RUNNING for {held}s (ready once up 10s)" in v.message


def test_a_published_health_endpoint_decides_instead_of_time():
    svc = parse({"microserviceID": "6b07d514812ccad2b5ee8dcc", "microservice_name": "trackingabc",
                 "instance_list": [{"instance_number": 0, "status": "RUNNING", "publicip": "192.0.2.10"}],
                 META: {"service": "tracking-server", "spec_hash": "h", "role": "tracking-server",
                        "ports": {"http": 5000}, "host_ports": {"http": 31000}, "health": {"http": "/health"}}})
    tracks = {0: Track("RUNNING", 0.0, probe_error="http://192.0.2.10:31000/health does not answer")}
    args = dict(now=1000.0, grace=120, unschedulable_since=None, unschedulable_retry=300, ready_after=10,
                health_checks=True)
    waiting = judge(svc, tracks=tracks, **args)
    assert waiting.state is ServiceState.starting and "health check: http://192.0.2.10:31000/health" in waiting.message
    tracks[0].healthy = True
    assert judge(svc, tracks=tracks, **args).state is ServiceState.running
    # Without checks (e.g. an operator that cannot reach the workers) time decides.
    assert judge(svc, tracks={0: Track("RUNNING", 0.0)}, **{**args, "health_checks": False}).state \
        is ServiceState.running


def test_history_counts_falls_and_forgets_what_is_gone():
    from flops_operator.platforms.oakestra.history import History

    history = History()
    for now, status in [(0, "CREATING"), (5, "RUNNING"), (9, "DEAD"), (20, "CREATING"), (25, "RUNNING"),
                        (30, "DEAD"), (31, "DEAD")]:
        history.update("p", [doc("RUNNING", [(0, status, "")])], now)
    (track,) = history.of("p", doc("RUNNING", [(0, "DEAD", "")])).values()
    assert (track.status, track.since, track.falls) == ("DEAD", 30, 2)
    v = verdict(doc("DEAD", [(0, "DEAD", "")]), now=31, failing={0: 30})
    assert "Oakestra re-deploys it" in v.message
    history.update("p", [], 40)
    assert history.size() == 0
