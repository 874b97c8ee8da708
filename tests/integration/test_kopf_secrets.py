"""The project's credentials Secret over real HTTP (kmock): generated once, extended, orphaned."""

from __future__ import annotations

import base64

import kubernetes.client
import pytest

from flops_operator.adapters.kopf_secrets import ORPHANED_FROM, SecretCredentials, orphaned_secret_name, secret_name
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
            metadata=kubernetes.client.V1ObjectMeta(name="mlflow-login", namespace=REF.namespace),
            data={"user": base64.b64encode(b"alice").decode()}))
        with pytest.raises(MissingCredentials, match="Secret team-s/mlflow-login has no key pass"):
            await store.read(REF, "mlflow-login", keys)
        core.patch_namespaced_secret("mlflow-login", REF.namespace,
                                     {"data": {"pass": base64.b64encode(b"pa55-word").decode()}})
        assert await store.read(REF, "mlflow-login", keys) == {"tracking-username": "alice",
                                                               "tracking-password": "pa55-word"}
    finally:
        await store.close()
