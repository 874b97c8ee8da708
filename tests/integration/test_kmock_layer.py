"""The kmock layer behaves as the API server in the ways kopf and the official client rely on."""

from __future__ import annotations

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from flops_operator.models import GROUP, PLURAL, VERSION

from .conftest import kubernetes_in_thread


@pytest.fixture(scope="module")
def api():
    with kubernetes_in_thread() as (url, _):
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
        yield client
        client.close()


def _project(name: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FLOpsProject", "metadata": {"name": name},
            "spec": {"task": {"name": "digits-mlp"}}, "status": {"phase": "Bogus"}}


def test_create_fills_metadata_and_drops_status(api) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    a = custom.create_namespaced_custom_object(GROUP, VERSION, "ns-a", PLURAL, _project("one"))
    b = custom.create_namespaced_custom_object(GROUP, VERSION, "ns-a", PLURAL, _project("two"))
    assert a["metadata"]["namespace"] == "ns-a" and a["metadata"]["generation"] == 1
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert "status" not in a


def test_patches_bump_versions_and_keep_status_apart(api) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "ns-b", PLURAL, _project("p"))
    rv = int(created["metadata"]["resourceVersion"])
    labelled = custom.patch_namespaced_custom_object(GROUP, VERSION, "ns-b", PLURAL, "p",
                                                     {"metadata": {"labels": {"a": "b"}}, "status": {"phase": "X"}})
    assert int(labelled["metadata"]["resourceVersion"]) > rv and labelled["metadata"]["generation"] == 1
    assert "status" not in labelled
    same_spec = custom.patch_namespaced_custom_object(GROUP, VERSION, "ns-b", PLURAL, "p",
                                                      {"spec": {"task": {"name": "digits-mlp"}}})
    assert same_spec["metadata"]["generation"] == 1
    changed = custom.patch_namespaced_custom_object(GROUP, VERSION, "ns-b", PLURAL, "p",
                                                    {"spec": {"learners": {"replicas": 4}}})
    assert changed["metadata"]["generation"] == 2
    status = custom.patch_namespaced_custom_object_status(GROUP, VERSION, "ns-b", PLURAL, "p",
                                                          {"status": {"phase": "Training"}, "spec": {"x": 1}})
    assert status["status"] == {"phase": "Training"} and "x" not in status["spec"]
    assert status["metadata"]["generation"] == 2


def test_json_patch_with_a_stale_resource_version_is_refused_with_422(api) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "ns-c", PLURAL, _project("p"))
    stale = created["metadata"]["resourceVersion"]
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": stale},
           {"op": "add", "path": "/metadata/finalizers", "value": ["flops.oakestra.io/cleanup"]}]
    done = custom.patch_namespaced_custom_object(GROUP, VERSION, "ns-c", PLURAL, "p", ops)
    assert done["metadata"]["finalizers"] == ["flops.oakestra.io/cleanup"]
    assert done["metadata"]["resourceVersion"] != stale
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object(GROUP, VERSION, "ns-c", PLURAL, "p", ops)
    assert refused.value.status == 422


def test_generate_name_and_namespaces(api) -> None:
    core = kubernetes.client.CoreV1Api(api)
    names = {core.create_namespaced_event("ns-d", {"metadata": {"generateName": "ev-"}, "involvedObject": {},
                                                   "reason": "R", "message": "m"}).metadata.name
             for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("ev-") for n in names)
    core.create_namespace({"metadata": {"name": "team-x"}})
    assert "team-x" in [n.metadata.name for n in core.list_namespace().items]
    assert core.read_namespace("team-x").metadata.uid
