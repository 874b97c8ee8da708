"""ServiceSpec -> SLA v2.0 microservice, and reading our identity back from a stored service."""

import pytest

from flops_operator.models import ProjectRef
from flops_operator.plan.services import Port, Role, ServiceSpec
from flops_operator.platforms.oakestra import names, sla

REF = ProjectRef("team-a", "digits", "u-42")
TRACKING = ServiceSpec(
    name="tracking-server", role=Role.tracking_server, image="ghcr.io/mlflow/mlflow:v3",
    command=("mlflow", "server", "--host", "{{bind}}", "--port", "{{port:http}}",
             "--backend-store-uri", "mysql+pymysql://u:{{secret:pw}}@{{addr:backend-store:mysql}}/db"),
    env=(("WORKDIR", "{{workdir}}"), ("SELF", "{{host:tracking-server}}")),
    ports=(Port("http", 5000, published=True), Port("metrics", 9100)),
    memory_mb=1024, vcpus=2, secrets=("pw",))
PEERS = {"backend-store": sla.Peer("10.30.70.7", {"mysql": 3306})}


def build(service=TRACKING, peers=PEERS):
    return sla.microservice(REF, service, rr_ip="10.30.99.9", peers=peers, secrets={"pw": "s3cret"},
                            workdir="/var/lib/flops", port_range=(30000, 40000))


def test_microservice_has_resolved_command_env_resources_and_address():
    ms = build()
    assert ms["microservice_name"] == names.service_name("tracking-server")
    assert ms["microservice_namespace"] == names.SERVICE_NAMESPACE and ms["microserviceID"] == ""
    assert ms["code"] == "ghcr.io/mlflow/mlflow:v3" and ms["virtualization"] == "container"
    assert ms["cmd"] == ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000",
                         "--backend-store-uri", "mysql+pymysql://u:s3cret@10.30.70.7:3306/db"]
    assert "WORKDIR=/var/lib/flops" in ms["environment"] and "SELF=10.30.99.9" in ms["environment"]
    assert f"FLOPS_SPEC_HASH={TRACKING.spec_hash}" in ms["environment"]
    assert (ms["memory"], ms["vcpus"], ms["one_shot"]) == (1024, 2, False)
    assert ms["addresses"] == {"rr_ip": "10.30.99.9"}
    host = names.host_port(REF.uid, "tracking-server", "http", (30000, 40000))
    assert ms["port"] == f"{host}:5000/tcp"  # only the published port is exposed on the worker
    assert ms["constraints"] == []
    assert ms[sla.META]["peers"] == {"backend-store": "10.30.70.7"}


def test_placement_is_a_direct_constraint_and_unpublished_services_have_no_port():
    learner = ServiceSpec(name="learner-3", role=Role.learner, image="img", command=("flops-learner",),
                          ports=(Port("clientappio", 9094),), cluster="edge1", one_shot=True)
    ms = build(learner, {})
    assert ms["constraints"] == [{"type": "direct", "cluster": "edge1"}]
    assert "port" not in ms and ms["one_shot"] is True


def test_a_missing_peer_is_reported_not_guessed():
    with pytest.raises(sla.MissingPeer):
        build(peers={})


def test_identity_round_trips_from_meta_and_from_env_alone():
    ms = build()
    stored = {**ms, "RR_ip": "10.30.99.9"}
    ident = sla.identity(stored)
    assert (ident.service, ident.spec_hash, ident.role) == ("tracking-server", TRACKING.spec_hash, "tracking-server")
    assert ident.ports == {"http": 5000, "metrics": 9100}
    stripped = {k: v for k, v in stored.items() if k != sla.META}
    assert (sla.identity(stripped).service, sla.identity(stripped).spec_hash) == ("tracking-server", TRACKING.spec_hash)
    assert sla.identity({"environment": ["A=1"]}) is None


def test_application_sla_is_v2_with_derived_names():
    body = sla.application(REF, "Admin")
    app = body["applications"][0]
    assert body["sla_version"] == "v2.0" and app["microservices"] == [] and app["applicationID"] == ""
    assert (app["application_name"], app["application_namespace"]) == (names.app_name(REF), names.app_namespace(REF))
