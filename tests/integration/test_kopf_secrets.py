"""The project's credentials Secret over real HTTP (kmock): generated once, extended, orphaned."""

from __future__ import annotations

import base64

import kubernetes.client
import pytest

from flops_operator.adapters.kopf_secrets import ORPHANED_FROM, SecretCredentials, orphaned_secret_name, secret_name
from flops_operator.credentials import OPT_IN_LABEL
from flops_operator.models import ProjectRef

from .conftest import kubernetes_in_thread

REF = ProjectRef("team-s", "digits", "8d1f0c2e-3b4a-4c5d-9e6f-001122334455")


@pytest.fixture
def kube():
    with kubernetes_in_thread() as (url, emulator):
        yield kubernetes.client.Configuration(host=url), emulator


def values(secret) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


async def test_orphaned_credentials_move_to_a_secret_nothing_owns(kube):
    config, _ = kube
    api = kubernetes.client.ApiClient(config)
    store = SecretCredentials(api)
    core = kubernetes.client.CoreV1Api(api)
    try:
        made = await store.ensure(REF, ["backend-password", "ftp-password"])
        assert core.read_namespaced_secret(secret_name(REF), REF.namespace).metadata.owner_references
        await store.orphan(REF)
        await store.orphan(REF)  # again, as after a crash: nothing changes
        secrets = core.list_namespaced_secret(REF.namespace).items
    finally:
        await store.close()
    [kept] = secrets
    assert kept.metadata.name == orphaned_secret_name(REF) and not kept.metadata.owner_references
    assert kept.metadata.labels[ORPHANED_FROM] == REF.uid and values(kept) == made


async def test_keys_are_generated_anew_and_deleted_in_the_secret_as_services_come_and_go(kube):
    """The Flower keys' rotation (plan/flower_keys.py) over real HTTP: renew writes a new value, drop deletes the key
    from the Secret (a merge patch with null), the other values stay."""
    config, _ = kube
    api = kubernetes.client.ApiClient(config)
    store = SecretCredentials(api)
    core = kubernetes.client.CoreV1Api(api)
    names = ["flower-ca", "flower-learner-key-0", "flower-learner-key-1"]
    try:
        first = await store.ensure(REF, names, drop=["flower-learner-key-seed"])
        again = await store.ensure(REF, names, renew=["flower-learner-key-1"], drop=["flower-learner-key-0"])
        stored = values(core.read_namespaced_secret(secret_name(REF), REF.namespace))
    finally:
        await store.close()
    assert again["flower-ca"] == first["flower-ca"] and again["flower-learner-key-1"] != first["flower-learner-key-1"]
    assert stored == again  # asked for, a name is not deleted (a service being created needs it)
    try:
        store = SecretCredentials(kubernetes.client.ApiClient(config))
        await store.ensure(REF, ["flower-ca"], drop=["flower-learner-key-0", "flower-learner-key-1"])
        stored = values(core.read_namespaced_secret(secret_name(REF), REF.namespace))
    finally:
        await store.close()
    assert stored == {"flower-ca": first["flower-ca"]}


async def test_a_referenced_secret_is_read_and_a_missing_one_or_key_is_named(kube):
    from flops_operator.platforms.base import MissingCredentials

    config, _ = kube
    api = kubernetes.client.ApiClient(config)
    store = SecretCredentials(api)
    core = kubernetes.client.CoreV1Api(api)
    keys = {"tracking-username": "user", "tracking-password": "pass"}
    try:
        with pytest.raises(MissingCredentials, match="Secret team-s/mlflow-login not found"):
            await store.read(REF, "mlflow-login", keys)
        core.create_namespaced_secret(REF.namespace, kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="mlflow-login", namespace=REF.namespace,
                                                    labels={OPT_IN_LABEL: "true"}),
            data={"user": base64.b64encode(b"alice").decode()}))
        with pytest.raises(MissingCredentials, match="Secret team-s/mlflow-login has no key pass"):
            await store.read(REF, "mlflow-login", keys)
        core.patch_namespaced_secret("mlflow-login", REF.namespace,
                                     {"data": {"pass": base64.b64encode(b"pa55-word").decode()}})
        assert await store.read(REF, "mlflow-login", keys) == {"tracking-username": "alice",
                                                               "tracking-password": "pa55-word"}
    finally:
        await store.close()


@pytest.mark.parametrize("labels", [None, {}, {OPT_IN_LABEL: "false"}, {OPT_IN_LABEL: "True"},
                                    {"flops.oakestra.io/credential": "true"}])
async def test_a_secret_without_the_opt_in_label_is_not_used_and_says_how_to_opt_in(kube, labels):
    from flops_operator.platforms.base import MissingCredentials

    config, _ = kube
    api = kubernetes.client.ApiClient(config)
    store = SecretCredentials(api)
    core = kubernetes.client.CoreV1Api(api)
    keys = {"tracking-username": "user", "tracking-password": "pass"}
    try:
        core.create_namespaced_secret(REF.namespace, kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="db-root", namespace=REF.namespace, labels=labels),
            data={"user": base64.b64encode(b"root").decode(), "pass": base64.b64encode(b"s3cret-root").decode()}))
        with pytest.raises(MissingCredentials) as caught:
            await store.read(REF, "db-root", keys, field="task.source.git.credentialsSecret", optional=True)
        message = str(caught.value)
        assert message.startswith("task.source.git.credentialsSecret: Secret team-s/db-root is not labelled")
        assert f"kubectl label secret -n team-s db-root {OPT_IN_LABEL}=true" in message
        assert "s3cret-root" not in message and "root" not in message.replace("db-root", "")
        # Labelled, the same Secret is used (read by a store that has not seen it: one may keep what it read).
        core.patch_namespaced_secret("db-root", REF.namespace, {"metadata": {"labels": {OPT_IN_LABEL: "true"}}})
        assert await SecretCredentials(api).read(REF, "db-root", keys) == {"tracking-username": "root",
                                                                           "tracking-password": "s3cret-root"}
    finally:
        await store.close()
