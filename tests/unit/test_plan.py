"""desired() and diff(): table-driven, no I/O."""

import json

import pytest

from flops_operator.models import parse_project
from flops_operator.plan.desired import aggregator_config, credential_names, desired
from flops_operator.plan.diff import Create, Remove, Replace, Wait, diff, effects
from flops_operator.plan.render import referenced_services, render_service
from flops_operator.plan.services import Role
from flops_operator.platforms.base import ObservedService, ServiceState
from tests.projects import fake_secret


def project(**spec):
    return parse_project({
        "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
        "metadata": {"name": "digits", "namespace": "team-a", "uid": "1234-abcd", "generation": 1},
        "spec": {"task": {"name": "digits-mlp"}, **spec},
    })


def observed(services, state=ServiceState.running, **overrides):
    out = {s.name: ObservedService(s.name, s.role, state, s.spec_hash) for s in services}
    for name, st in overrides.items():
        name = name.replace("_", "-")
        out[name] = ObservedService(name, out[name].role, st, out[name].spec_hash)
    return out


@pytest.mark.parametrize("spec,training_done,names", [
    ({}, False, ["artifact-store", "tracking-server", "aggregator", "learner-0", "learner-1"]),
    ({"tracking": {"backendStore": {"type": "mysql"}}, "learners": {"replicas": 3}}, False,
     ["backend-store", "artifact-store", "tracking-server", "aggregator", "learner-0", "learner-1", "learner-2"]),
    ({"tracking": {"artifactStore": {"type": "local"}}}, False, ["tracking-server", "aggregator", "learner-0", "learner-1"]),
    ({"tracking": {"uri": "http://mlflow.example:5000"}}, False, ["aggregator", "learner-0", "learner-1"]),
    ({}, True, ["artifact-store", "tracking-server"]),
    ({"serving": {"enabled": True}}, True, ["artifact-store", "tracking-server", "model-server"]),
    # A new training (a trigger, a fix) keeps the model of the last one served meanwhile.
    ({"serving": {"enabled": True}}, False,
     ["artifact-store", "tracking-server", "aggregator", "learner-0", "learner-1", "model-server"]),
])
def test_desired_services(spec, training_done, names):
    services = desired(project(**spec), training_done=training_done, model_registered=True)
    assert [s.name for s in services] == names


def test_learners_have_their_own_partition_placement_and_identity():
    p = project(learners={"replicas": 3, "placement": {"cluster": "edge-munich"}})
    learners = [s for s in desired(p, training_done=False) if s.role is Role.learner]
    assert [s.partition_id for s in learners] == [0, 1, 2]
    assert {s.cluster for s in learners} == {"edge-munich"}
    assert [s.env_dict["FLOPS_PARTITION_ID"] for s in learners] == ["0", "1", "2"]
    assert {s.env_dict["FLOPS_NUM_PARTITIONS"] for s in learners} == {"3"}
    assert len({s.spec_hash for s in learners}) == 3
    assert all(s.one_shot and s.depends_on == ("aggregator",) for s in learners)


def test_services_refer_to_each_other_only_by_placeholder():
    services = {s.name: s for s in desired(project(tracking={"backendStore": {"type": "mysql"}}), training_done=False)}
    assert referenced_services(services["tracking-server"]) == {"backend-store", "artifact-store"}
    assert referenced_services(services["aggregator"]) == {"tracking-server"}
    assert referenced_services(services["learner-0"]) == {"aggregator"}
    assert services["tracking-server"].depends_on == ("backend-store", "artifact-store")
    assert set(services["tracking-server"].secrets) == {
        "backend-password", "ftp-password", "mlflow-admin-password", "mlflow-aggregator-password",
        "mlflow-reader-password", "mlflow-flask-secret-key"}


def test_each_training_service_gets_its_own_key_and_certificates_issued_from_the_ca_never_its_key():
    services = desired(project(tracking={"backendStore": {"type": "mysql"}}), training_done=False)
    for s in services:
        if s.role is Role.learner:
            i = s.partition_id
            assert s.secrets == ("flower-ca", f"flower-learner-key-{i}")
            assert [(k, v) for k, v in s.env if "secret:" in v] == [
                ("FLOPS_SUPERNODE_KEY", "{{secret:flower-learner-key-%d}}" % i)]
            assert s.env_dict["FLOPS_FLOWER_ROOT_CERT"] == "{{cacert:flower-ca}}"
            assert s.env_dict["FLOPS_SUPERNODE_CERT"] == "{{learnercert:flower-ca:flower-learner-key-%d:%d}}" % (i, i)
            assert s.env_dict["FLOPS_ENROLL_ADDRESS"] == "{{addr:aggregator:enroll}}"
            assert "secret:" not in json.dumps(s.command)
        if s.role is Role.aggregator:
            assert s.secrets == ("mlflow-aggregator-password", "flower-ca", "flower-superlink-key")
            assert [k for k, v in s.env if "secret:" in v] == ["FLOPS_SUPERLINK_KEY", "MLFLOW_TRACKING_PASSWORD"]
            assert s.env_dict["FLOPS_FLOWER_CA_CERT"] == "{{cacert:flower-ca}}"
            assert s.env_dict["FLOPS_SUPERLINK_CERT"] == "{{servercert:flower-ca:flower-superlink-key:aggregator}}"
            assert s.env_dict["FLOPS_ENROLL_ADDRESS"] == "{{bind}}:{{port:enroll}}"
            assert [p.name for p in s.ports] == ["superlink", "enroll"] and not any(p.published for p in s.ports)
            assert "secret:" not in json.dumps(s.command)
        # Nothing any service is given names the CA bundle itself, or a key but its own.
        assert "{{secret:flower-ca}}" not in json.dumps(s.env)


def test_no_learner_key_is_in_the_aggregators_spec_so_learners_come_and_go_without_replacing_it():
    aggregator = {s.name: s for s in desired(project(learners={"replicas": 2}), training_done=False)}["aggregator"]
    scaled = {s.name: s for s in desired(project(learners={"replicas": 5}), training_done=False)}["aggregator"]
    assert "learner-key" not in json.dumps(aggregator.env) and aggregator.spec_hash == scaled.spec_hash


def test_aggregator_config_resolves_defaults():
    cfg = aggregator_config(project(learners={"replicas": 4}, training={"minTrainLearners": 2,
                                                                         "strategy": {"name": "FedProx"}})).to_wire()
    assert cfg["training"]["minTrainLearners"] == 2
    assert cfg["training"]["minEvaluateLearners"] == 4 and cfg["training"]["minAvailableLearners"] == 4
    assert cfg["training"]["strategy"] == {"name": "FedProx", "arguments": {"proximal_mu": 0.1},
                                           "fractionTrain": 1.0, "fractionEvaluate": 1.0}
    assert cfg["experiment"] == "team-a/digits" and cfg["registry"] == {"modelName": "digits", "alias": "champion"}
    assert cfg["data"]["dataset"] == "digits"


LOGINS = ["mlflow-admin-password", "mlflow-aggregator-password", "mlflow-reader-password", "mlflow-flask-secret-key"]
FLOWER = ["flower-ca", "flower-superlink-key", "flower-learner-key-0", "flower-learner-key-1"]


@pytest.mark.parametrize("spec,names", [
    ({}, ["ftp-password", *LOGINS, *FLOWER]),
    ({"tracking": {"backendStore": {"type": "mysql"}}},
     ["backend-password", "backend-root-password", "ftp-password", *LOGINS, *FLOWER]),
    ({"tracking": {"artifactStore": {"type": "local"}}}, [*LOGINS, *FLOWER]),
    ({"tracking": {"uri": "http://mlflow.example"}}, FLOWER),
])
def test_credential_names(spec, names):
    assert credential_names(project(**spec).spec) == names


class _Resolver:
    def address(self, service, port):
        return f"{service}:{port}"

    def host(self, service):
        return service

    def own_port(self, port):
        return 1234

    def bind(self):
        return "127.0.0.1"

    def secret(self, name):
        return fake_secret(name)

    def workdir(self):
        return "/w"


def test_render_resolves_every_placeholder():
    services = {s.name: s for s in desired(project(tracking={"backendStore": {"type": "mysql"}}), training_done=False)}
    command, env = render_service(services["tracking-server"], _Resolver())
    assert "{{" not in " ".join(command) + " ".join(env.values())
    assert env["MLFLOW_BACKEND_STORE_URI"] == "mysql+pymysql://mlflow:<backend-password>@backend-store:mysql/mlflow"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "ftp://mlflow:<ftp-password>@artifact-store:ftp/artifacts"
    assert not any("password" in part for part in command)
    _, env = render_service(services["learner-1"], _Resolver())
    assert env["FLOPS_SUPERLINK"] == "aggregator:superlink" and env["FLOPS_CLIENTAPPIO_ADDRESS"] == "127.0.0.1:1234"


def _names(actions):
    return [(type(a).__name__, a.name if isinstance(a, (Remove, Wait)) else a.service.name) for a in actions]


def test_diff_steady_state_is_zero_actions():
    wanted = desired(project(learners={"replicas": 3}), training_done=False)
    assert diff(wanted, observed(wanted)) == []


def test_diff_scaling_learners_3_to_5_gives_exactly_two_creates():
    before = desired(project(learners={"replicas": 3}), training_done=False)
    after = desired(project(learners={"replicas": 5}), training_done=False)
    assert _names(diff(after, observed(before))) == [("Create", "learner-3"), ("Create", "learner-4")]
    # new learners are told the new count; running ones keep theirs (no restart of the run)
    assert {s.name: s.env_dict["FLOPS_NUM_PARTITIONS"] for s in after if s.role is Role.learner}["learner-4"] == "5"


def test_diff_scaling_down_removes_exactly_the_extra_learners():
    before = desired(project(learners={"replicas": 5}), training_done=False)
    after = desired(project(learners={"replicas": 2}), training_done=False)
    assert _names(diff(after, observed(before))) == [
        ("Remove", "learner-2"), ("Remove", "learner-3"), ("Remove", "learner-4")]


def test_explicit_minimum_change_replaces_the_aggregator():
    before = desired(project(learners={"replicas": 3}, training={"minTrainLearners": 2}), training_done=False)
    after = desired(project(learners={"replicas": 3}, training={"minTrainLearners": 1}), training_done=False)
    assert _names(diff(after, observed(before))) == [("Replace", "aggregator")]


def test_diff_recreates_a_lost_service():
    wanted = desired(project(), training_done=False)
    seen = observed(wanted)
    del seen["learner-1"]
    assert _names(diff(wanted, seen)) == [("Create", "learner-1")]


def test_diff_waits_for_dependencies_in_order():
    wanted = desired(project(tracking={"backendStore": {"type": "mysql"}}), training_done=False)
    assert _names(diff(wanted, {})) == [
        ("Create", "backend-store"), ("Create", "artifact-store"), ("Wait", "tracking-server"),
        ("Wait", "aggregator"), ("Wait", "learner-0"), ("Wait", "learner-1")]
    seen = observed([s for s in wanted if s.name in ("backend-store", "artifact-store")])
    seen["backend-store"] = ObservedService("backend-store", Role.backend_store, ServiceState.starting,
                                            seen["backend-store"].spec_hash)
    assert ("Wait", "tracking-server") in _names(diff(wanted, seen))


def test_diff_removes_training_services_once_training_is_done():
    running = desired(project(), training_done=False)
    done = desired(project(), training_done=True)
    assert _names(diff(done, observed(running, aggregator=ServiceState.completed))) == [
        ("Remove", "aggregator"), ("Remove", "learner-0"), ("Remove", "learner-1")]


@pytest.mark.parametrize("state", [ServiceState.running, ServiceState.completed, ServiceState.failed])
def test_diff_replaces_a_service_that_runs_or_ran_another_spec(state):
    # A finished aggregator that is still wanted trained another identity (a fixed spec after a failure).
    old = desired(project(), training_done=False)
    new = desired(project(training={"rounds": 7}), training_done=False)
    assert _names(diff(new, observed(old, aggregator=state))) == [("Replace", "aggregator")]
    assert diff(old, observed(old, aggregator=state)) == []


def test_every_default_image_is_one_this_repository_builds():
    from flops_operator.plan import images

    p = project(tracking={"backendStore": {"type": "mysql"}, "artifactStore": {"type": "ftp"}},
                serving={"enabled": True})
    planned = {s.image for done in (False, True) for s in desired(p, training_done=done, model_registered=True)}
    # The image builder runs for a task from task.source, while it is built.
    from dataclasses import replace

    from flops_operator.models.status import TaskStatus

    source = project(task={"source": {"git": {"url": "https://git.example.com/t/wine.git"}}})
    source = replace(source, code="c" * 40, task=TaskStatus(build_phase="Building", commit="c" * 40))
    planned |= {s.image for s in desired(source, training_done=False)}
    assert planned == set(images.PLANNED)
    assert all(image.startswith(f"{images.IMAGE_REGISTRY}/") and image.endswith(f":{images.IMAGE_VERSION}")
               for image in planned)


def _asdict_hash(service) -> str:
    """spec_hash as first defined: services running today carry hashes made this way."""
    import hashlib
    from dataclasses import asdict

    basis = asdict(service)
    basis["env"] = [(k, v) for k, v in service.env if k not in service.scale_env]
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize("spec", [
    {"task": {"name": "digits-mlp"}, "learners": {"replicas": 3}, "tracking": {"backendStore": {"type": "mysql"}}},
    {"platform": "oakestra", "task": {"module": "mypkg.task", "image": "example.org/t:1"},
     "learners": {"replicas": 2, "placement": {"cluster": "edge1"}}, "serving": {"enabled": True}},
])
def test_spec_hash_is_what_it_always_was(spec):
    project = parse_project({"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                             "metadata": {"name": "h", "namespace": "n", "uid": "u"}, "spec": spec})
    services = [*desired(project, training_done=False), *desired(project, training_done=True, model_registered=True)]
    assert services and all(s.spec_hash == _asdict_hash(s) for s in services)
