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


# Where each generated secret may be in what the operator sends Oakestra (which has no secret store): the
# `environment` of the SLA of the services that use it, nowhere else (not `cmd`, not another field, not another
# service's SLA). The kopf Secret is the other place (tests/integration/test_kopf_secrets.py). The Flower CA's key is
# in no SLA at all: services get certificates issued from it; each Flower key is in its own service's SLA only.
SECRET_PLACES = {
    "backend-password": {"backend-store", "tracking-server"},
    "backend-root-password": {"backend-store"},
    "ftp-password": {"artifact-store", "tracking-server"},
    "mlflow-admin-password": {"tracking-server"},
    "mlflow-aggregator-password": {"tracking-server", "aggregator"},
    "mlflow-reader-password": {"tracking-server", "model-server"},
    "mlflow-flask-secret-key": {"tracking-server"},
    "flower-ca": set(),
    "flower-superlink-key": {"aggregator"},
    "flower-learner-key-0": {"learner-0"},
    "flower-learner-key-1": {"learner-1"},
}


def test_each_generated_secret_is_only_in_the_environment_of_the_slas_that_use_it():
    import json

    from flops_operator.credentials import generate
    from flops_operator.models import parse_project
    from flops_operator.plan.desired import credential_names, desired
    from flops_runtime import pki

    project = parse_project({"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                             "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-42"},
                             "spec": {"platform": "oakestra", "task": {"name": "digits-mlp"},
                                      "tracking": {"backendStore": {"type": "mysql"}}, "serving": {"enabled": True}}})
    secrets = {name: generate(name) for name in credential_names(project.spec)}
    assert set(secrets) == set(SECRET_PLACES)
    services = desired(project, training_done=False, model_registered=True)
    peers = {s.name: sla.Peer(f"10.30.0.{i}", {p.name: p.container_port for p in s.ports})
             for i, s in enumerate(services, start=2)}
    slas = {service.name: sla.microservice(REF, service, rr_ip=f"10.30.0.{i}", peers=peers,
                                           secrets={k: secrets[k] for k in service.secrets},
                                           workdir="/var/lib/flops", port_range=(30000, 40000))
            for i, service in enumerate(services, start=2)}
    # A secret in every form a value takes there: as stored (one line) and as the PEM lines of the Flower keys.
    forms = {name: {value, *(line for line in pki.pem(value).splitlines()[1:-1] if len(line) > 16)}
             if name.startswith("flower-") else {value} for name, value in secrets.items()}
    found: dict[str, set[str]] = {}
    for name, ms in slas.items():
        elsewhere = json.dumps({k: v for k, v in ms.items() if k != "environment"})
        for secret, values in forms.items():
            assert not any(v in elsewhere for v in values), f"{secret} outside the environment of {name}'s SLA"
            if any(v in entry for entry in ms["environment"] for v in values):
                found.setdefault(secret, set()).add(name)
    assert found == {name: places for name, places in SECRET_PLACES.items() if places}
    # What each training service gets besides its own key is public and issued from the CA: its certificate (for
    # its own key, naming the aggregator's address or the learner) and the CA's; no other private key at all.
    env = {name: dict(entry.split("=", 1) for entry in ms["environment"]) for name, ms in slas.items()}
    ca_cert = pki.ca_certificate(secrets["flower-ca"])
    aggregator = env["aggregator"]
    assert aggregator["FLOPS_FLOWER_CA_CERT"] == ca_cert
    assert aggregator["FLOPS_SUPERLINK_KEY"] == secrets["flower-superlink-key"]
    pki.check_server_certificate(ca_cert, aggregator["FLOPS_SUPERLINK_CERT"], secrets["flower-superlink-key"])
    assert aggregator["FLOPS_ENROLL_ADDRESS"] == "0.0.0.0:8001"
    learners = [s for s in services if s.role.value == "learner"]
    assert len(learners) == 2
    for learner in learners:
        mine = env[learner.name]
        assert mine["FLOPS_FLOWER_ROOT_CERT"] == ca_cert
        assert mine["FLOPS_SUPERNODE_KEY"] == secrets[f"flower-learner-key-{learner.partition_id}"]
        cert = pki.read_learner_certificate(ca_cert, mine["FLOPS_SUPERNODE_CERT"])
        assert cert.partition == learner.partition_id
        assert cert.public_key == pki.private_key(mine["FLOPS_SUPERNODE_KEY"]).public_key()
        assert mine["FLOPS_ENROLL_ADDRESS"] == f"{peers['aggregator'].rr_ip}:8001"
    for name, ms in slas.items():
        text = "\n".join(pki.pem(v) if v.startswith("LS0t") else v for v in env[name].values())
        assert text.count("PRIVATE KEY-----") == (2 if name == "aggregator" or name.startswith("learner-") else 0), name
        assert all("\n" not in entry for entry in ms["environment"]), "one line per variable (env files)"
