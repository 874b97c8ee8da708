"""The reconcile step over the in-memory platform: converges, is idempotent, cleans up."""

import copy
import json

import pytest

from flops_operator.credentials import FileCredentials, MemoryCredentials
from flops_operator.models import FLOpsProjectStatus, Phase
from flops_operator.platforms.base import ServiceState, TransientPlatformError
from flops_operator.platforms.fake import FakePlatform
from flops_operator.progress import NoProgress
from flops_operator.reconcile import Cleanup, cleanup_plan, finalize, project_ref, reconcile

MANIFEST = {
    "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
    "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-42", "generation": 1},
    "spec": {"task": {"name": "digits-mlp"}, "learners": {"replicas": 3},
             "tracking": {"backendStore": {"type": "mysql"}}},
}


async def converge(manifest, platform, credentials, status=None, steps=8):
    status = status or FLOpsProjectStatus()
    result = None
    for _ in range(steps):
        result = await reconcile(manifest, status, platform=platform, credentials=credentials,
                                 progress_source=NoProgress())
        status = result.status
        if not result.applied:
            break
    return result


async def test_converges_in_dependency_order_then_writes_nothing():
    platform, creds = FakePlatform(), MemoryCredentials()
    result = await converge(MANIFEST, platform, creds)
    created = [name for op, _, name in platform.writes()]
    assert created == ["backend-store", "artifact-store", "tracking-server", "aggregator",
                       "learner-0", "learner-1", "learner-2"]
    assert result.status.phase is Phase.Training
    assert result.status.condition("Ready").status == "True"
    writes = len(platform.writes())
    again = await reconcile(MANIFEST, result.status, platform=platform, credentials=creds, progress_source=NoProgress())
    assert again.applied == [] and len(platform.writes()) == writes


async def test_secrets_reach_services_but_not_status():
    platform, creds = FakePlatform(), MemoryCredentials()
    result = await converge(MANIFEST, platform, creds)
    ref = result.project.ref
    password = creds.store[ref.uid]["backend-password"]
    tracking = platform.services(ref)["tracking-server"]
    assert password in tracking.env["MLFLOW_BACKEND_STORE_URI"]
    assert not any(password in part for part in tracking.command)
    assert password not in str(result.status.to_wire())


async def test_scale_up_creates_only_the_new_learners():
    platform, creds = FakePlatform(), MemoryCredentials()
    result = await converge(MANIFEST, platform, creds)
    bigger = copy.deepcopy(MANIFEST)
    bigger["spec"]["learners"]["replicas"] = 5
    bigger["metadata"]["generation"] = 2
    before = len(platform.writes())
    result = await converge(bigger, platform, creds, result.status)
    assert platform.writes()[before:] == [("ensure", "team-a/digits", "learner-3"), ("ensure", "team-a/digits", "learner-4")]
    assert result.status.observed_generation == 2


async def test_lost_service_is_recreated():
    platform, creds = FakePlatform(), MemoryCredentials()
    result = await converge(MANIFEST, platform, creds)
    platform.lose(result.project.ref, "learner-1")
    result = await reconcile(MANIFEST, result.status, platform=platform, credentials=creds, progress_source=NoProgress())
    assert [type(a).__name__ for a in result.applied] == ["Create"]
    assert "learner-1" in platform.services(result.project.ref)


def admission(platform, ref, name):
    """What a training service was rendered with of the Flower PKI: its key, its certificate's key, the CA's cert."""
    from flops_runtime import pki

    env = platform.services(ref)[name].env
    if name == "aggregator":
        pki.check_server_certificate(env["FLOPS_FLOWER_CA_CERT"], env["FLOPS_SUPERLINK_CERT"], env["FLOPS_SUPERLINK_KEY"])
        return env["FLOPS_SUPERLINK_KEY"], env["FLOPS_FLOWER_CA_CERT"]
    cert = pki.read_learner_certificate(env["FLOPS_FLOWER_ROOT_CERT"], env["FLOPS_SUPERNODE_CERT"])
    assert cert.public_key == pki.private_key(env["FLOPS_SUPERNODE_KEY"]).public_key()
    assert f"learner-{cert.partition}" == name
    return env["FLOPS_SUPERNODE_KEY"], env["FLOPS_FLOWER_ROOT_CERT"]


@pytest.mark.parametrize("store", ["memory", "file"])
async def test_a_replaced_or_recreated_learner_gets_a_new_key_and_the_aggregator_stays(store, tmp_path):
    platform = FakePlatform()
    creds = MemoryCredentials() if store == "memory" else FileCredentials(lambda ref: tmp_path / "credentials.json")
    result = await converge(MANIFEST, platform, creds)
    ref = result.project.ref

    def stored() -> dict[str, str]:
        return creds.store[ref.uid] if store == "memory" else json.loads((tmp_path / "credentials.json").read_text())

    keys = {name: admission(platform, ref, name) for name in ("aggregator", "learner-0", "learner-1", "learner-2")}
    assert len({key for key, _ in keys.values()}) == 4  # each its own, random
    assert {ca for _, ca in keys.values()} == {keys["aggregator"][1]}  # one CA, whose key no service got
    assert stored()["flower-learner-key-1"] == keys["learner-1"][0] and "flower-learner-key-seed" not in stored()
    aggregator = platform.services(ref)["aggregator"]

    resized = copy.deepcopy(MANIFEST)
    resized["spec"]["learners"]["resources"] = {"memoryMB": 1024}  # applied in place: learners replaced
    resized["metadata"]["generation"] = 2
    result = await converge(resized, platform, creds, result.status)
    assert platform.services(ref)["aggregator"] is aggregator  # not replaced: the training goes on
    for name in ("learner-0", "learner-1", "learner-2"):
        key, ca = admission(platform, ref, name)
        assert key != keys[name][0] and ca == keys["aggregator"][1], name
    assert keys["learner-1"][0] not in stored().values()  # the old key is gone from the store too

    renewed = admission(platform, ref, "learner-1")[0]
    platform.lose(ref, "learner-1")
    result = await converge(resized, platform, creds, result.status)
    assert admission(platform, ref, "learner-1")[0] not in (renewed, keys["learner-1"][0])

    platform.complete(ref, "aggregator")
    result = await converge(resized, platform, creds, result.status)
    assert result.status.phase is Phase.Completed
    assert not [name for name in stored() if name.startswith("flower-")]  # no key outlives its service, nor the CA


async def test_invalid_spec_touches_nothing():
    platform, creds = FakePlatform(), MemoryCredentials()
    bad = copy.deepcopy(MANIFEST)
    bad["spec"]["training"] = {"minTrainLearners": 9}
    result = await reconcile(bad, FLOpsProjectStatus(), platform=platform, credentials=creds, progress_source=NoProgress())
    assert result.invalid and platform.calls == [] and creds.store == {}
    assert result.status.condition("Stalled").status == "True"
    assert "spec.training.minTrainLearners" in result.status.message


async def test_training_done_removes_training_services_and_keeps_the_stack():
    platform, creds = FakePlatform(), MemoryCredentials()
    result = await converge(MANIFEST, platform, creds)
    platform.complete(result.project.ref, "aggregator")
    result = await converge(MANIFEST, platform, creds, result.status)
    assert result.status.phase is Phase.Completed and result.settled
    assert sorted(platform.services(result.project.ref)) == ["artifact-store", "backend-store", "tracking-server"]


async def test_transient_error_propagates_after_doing_what_it_could():
    platform, creds = FakePlatform(start_state=ServiceState.starting), MemoryCredentials()
    platform.failing = True
    with pytest.raises(TransientPlatformError):
        await reconcile(MANIFEST, FLOpsProjectStatus(), platform=platform, credentials=creds, progress_source=NoProgress())


async def test_finalize_honours_deletion_policy():
    platform, creds = FakePlatform(), MemoryCredentials()
    result = await converge(MANIFEST, platform, creds)
    orphan = copy.deepcopy(MANIFEST)
    orphan["spec"]["deletionPolicy"] = "Orphan"
    assert await finalize(orphan, platform=platform, credentials=creds) is False
    assert platform.services(result.project.ref)
    assert set(creds.orphaned[result.project.ref.uid]) == {
        "backend-password", "backend-root-password", "ftp-password", "mlflow-admin-password",
        "mlflow-aggregator-password", "mlflow-reader-password", "mlflow-flask-secret-key", "flower-ca",
        "flower-superlink-key", *(f"flower-learner-key-{i}" for i in range(result.project.spec.learners.replicas))}
    assert await finalize(MANIFEST, platform=platform, credentials=creds) is True
    assert platform.projects == {} and creds.store == {}


async def test_finalize_works_for_a_spec_that_no_longer_validates():
    platform, creds = FakePlatform(), MemoryCredentials()
    await converge(MANIFEST, platform, creds)
    broken = copy.deepcopy(MANIFEST)
    broken["spec"]["training"] = {"rounds": "many"}
    assert await finalize(broken, platform=platform, credentials=creds) is True
    assert platform.projects == {}


MADE = {"components": [{"name": "aggregator"}]}
ON_OAKESTRA = {"oakestra": {"applicationId": "6b07d46693280389573db3aa"}}


@pytest.mark.parametrize("spec, status, plan", [
    ({"platform": "oakestra", "task": {}}, None, Cleanup(False, "oakestra", False)),
    ({"task": {}}, None, Cleanup(False, "local", False)),  # the model's default platform
    ({"platform": "local", "training": {"rounds": "many"}, "deletionPolicy": "Orphan"}, MADE,
     Cleanup(True, "local", True)),  # invalid otherwise: the platform it names still counts
    ("hello", None, Cleanup(False, None, False)),
    ([1, 2, 3], {"phase": "Failed"}, Cleanup(False, None, False)),
    (None, None, Cleanup(False, None, False)),
    ("(missing)", None, Cleanup(False, None, False)),
    ({"platform": "kubernetes"}, {"components": []}, Cleanup(False, None, False)),
    ({"platform": "kubernetes"}, MADE, Cleanup(False, "local", True)),  # made something earlier: status says where
    (None, {**MADE, **ON_OAKESTRA}, Cleanup(False, "oakestra", True)),
    ("hello", ON_OAKESTRA, Cleanup(False, "oakestra", True)),
    ({"platform": ["oakestra"]}, "garbage", Cleanup(False, None, False)),
])
def test_cleanup_plan_for_any_manifest_shape(spec, status, plan):
    manifest = {"metadata": {"name": "x", "namespace": "n", "uid": "u"}}
    if spec != "(missing)":
        manifest["spec"] = spec
    if status is not None:
        manifest["status"] = status
    assert cleanup_plan(manifest) == plan


async def test_finalize_without_a_platform_removes_only_the_credentials():
    creds = MemoryCredentials()
    await creds.ensure(project_ref(MANIFEST), ["a"])
    assert await finalize({**MANIFEST, "spec": "hello"}, platform=None, credentials=creds) is False
    assert creds.store == {}


async def test_file_credentials_are_private_and_stable(tmp_path):
    creds = FileCredentials(lambda ref: tmp_path / ref.namespace / ref.name / "credentials.json")
    ref = project_ref(MANIFEST)
    first = await creds.ensure(ref, ["a", "b"])
    assert (await creds.ensure(ref, ["a", "b", "c"]))["a"] == first["a"]
    path = tmp_path / "team-a" / "digits" / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    await creds.remove(ref)
    assert not path.exists()


async def test_services_are_wired_by_rendered_addresses():
    platform, creds = FakePlatform(), MemoryCredentials()
    result = await converge(MANIFEST, platform, creds)
    services = platform.services(result.project.ref)
    assert services["learner-2"].env["FLOPS_SUPERLINK"] == "aggregator.team-a.digits:8000"
    assert services["aggregator"].env["MLFLOW_TRACKING_URI"] == "http://tracking-server.team-a.digits:5000"
    assert "@backend-store.team-a.digits:3306/mlflow" in services["tracking-server"].env["MLFLOW_BACKEND_STORE_URI"]


def test_the_plan_is_reused_for_the_same_spec_and_flags_and_the_cache_is_bounded(monkeypatch):
    from flops_operator.plan import cache as module
    from flops_operator.models import parse_project

    monkeypatch.setattr(module, "_PLANS", type(module._PLANS)())
    monkeypatch.setattr(module, "KEPT", 2)
    project = parse_project(MANIFEST)
    first = module.planned(MANIFEST, project, training_done=False, model_registered=False)
    assert module.planned(copy.deepcopy(MANIFEST), project, training_done=False, model_registered=False) is first
    done = module.planned(MANIFEST, project, training_done=True, model_registered=False)
    assert done is not first and [s.name for s in done] != [s.name for s in first]
    scaled = copy.deepcopy(MANIFEST)
    scaled["spec"]["learners"]["replicas"] = 5
    assert len(module.planned(scaled, parse_project(scaled), training_done=False, model_registered=False)) == len(first) + 2
    assert len(module._PLANS) == 2
