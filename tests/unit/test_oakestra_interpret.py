"""Reading Oakestra service documents: per-instance states, negative scheduling, instance calls."""

from flops_operator.platforms.base import ServiceState
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


def verdict(svc, now=1000.0, failing=None, since=None):
    return judge(svc, now=now, failing_since=failing or {}, grace=120, unschedulable_since=since,
                 unschedulable_retry=300)


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
    assert early.state is ServiceState.starting and "Oakestra retries it" in early.message
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
