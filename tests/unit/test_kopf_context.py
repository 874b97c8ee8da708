"""Platform choice, metrics and the `flops operator` command line, without an API server."""

from __future__ import annotations

import socket

import kubernetes.client
import pytest
from typer.testing import CliRunner

from flops_operator.adapters.kopf_cli import platform_factories
from flops_operator.adapters.kopf_context import PlatformSet, connection_info
from flops_operator.adapters.kopf_metrics import Metrics
from flops_operator.adapters.kopf_secrets import SecretCredentials
from flops_operator.cli import app
from flops_operator.models import Phase, ProjectRef
from flops_operator.platforms.base import PermanentPlatformError, TransientPlatformError
from flops_operator.platforms.fake import FakePlatform

REF = ProjectRef(namespace="team-a", name="digits", uid="u-1")


def manifest(platform: str | None) -> dict:
    spec = {"task": {"name": "digits-mlp"}}
    if platform is not None:
        spec["platform"] = platform
    return {"spec": spec}


async def test_a_project_gets_the_platform_it_names_built_once() -> None:
    built = []

    def factory() -> FakePlatform:
        built.append(FakePlatform())
        return built[-1]

    platforms = PlatformSet({"local": factory}, Metrics())
    first, again = platforms.for_manifest(manifest("local")), platforms.for_manifest(manifest(None))
    assert first is again and len(built) == 1
    await first.observe(REF)
    assert built[0].calls == [("observe", REF.key, "")]


async def test_a_platform_not_served_refuses_every_call_with_a_message() -> None:
    platforms = PlatformSet({"local": FakePlatform}, Metrics())
    unusable = platforms.for_manifest(manifest("oakestra"))
    with pytest.raises(PermanentPlatformError, match=r"spec.platform 'oakestra' is not served .*serves: local"):
        await unusable.observe(REF)
    with pytest.raises(PermanentPlatformError, match="deletionPolicy: Orphan"):
        await unusable.remove_all(REF)


@pytest.mark.parametrize("spec, message", [
    ("hello", "spec is not a mapping"),
    ([1, 2, 3], "spec is not a mapping"),
    (None, "spec is not a mapping"),
    ({"platform": "kubernetes"}, r"spec.platform 'kubernetes' is not a platform \(known: local, oakestra\)$"),
    ({"platform": ["oakestra"]}, r"spec.platform \['oakestra'\] is not a platform"),
    ({"platform": "oakestra"}, r"not served by this operator \(it serves: local\); start one with --platform oakestra$"),
], ids=["string", "list", "null", "unknown-platform", "unhashable-platform", "not-served"])
async def test_any_spec_shape_gets_a_platform_that_says_what_is_wrong(spec, message) -> None:
    platforms = PlatformSet({"local": FakePlatform}, Metrics())
    with pytest.raises(PermanentPlatformError, match=message):
        await platforms.for_manifest({"spec": spec}).observe(REF)


def test_every_platform_a_hint_names_is_a_value_of_the_platform_flag() -> None:
    from flops_operator.adapters.kopf_cli import PlatformChoice
    from flops_operator.models.spec import Platform

    assert {p.value for p in Platform} <= {c.value for c in PlatformChoice}


async def test_a_misconfigured_platform_is_unusable_not_a_crash() -> None:
    def broken() -> FakePlatform:
        raise ValueError("Oakestra URL is missing")

    platforms = PlatformSet({"oakestra": broken}, Metrics())
    with pytest.raises(PermanentPlatformError, match="platform oakestra cannot be used: Oakestra URL is missing"):
        await platforms.for_manifest(manifest("oakestra")).observe(REF)


def test_fake_stands_in_for_platforms_not_served_for_real() -> None:
    only_fake = platform_factories(["fake"])
    assert set(only_fake) == {"local", "oakestra"}
    assert only_fake["local"]() is only_fake["oakestra"]()
    mixed = platform_factories(["local", "fake"])
    assert mixed["oakestra"]().name == "fake"
    assert mixed["local"]().name == "local"
    assert set(platform_factories(["oakestra"])) == {"oakestra"}


async def test_metrics_count_reconciles_platform_errors_and_projects_by_phase() -> None:
    metrics = Metrics()
    fake = FakePlatform()
    platform = PlatformSet({"local": lambda: fake}, metrics).for_manifest(manifest("local"))
    await platform.observe(REF)
    fake.failing = True
    with pytest.raises(TransientPlatformError):
        await platform.observe(REF)
    metrics.reconciled("change", "ok", 0.2)
    metrics.phase("team-a/digits", Phase.Training)
    metrics.phase("team-a/other", Phase.Training)
    metrics.phase("team-b/x", Phase.Completed)
    metrics.forget("team-b/x")
    text = metrics.exposition().decode()
    assert 'flops_platform_calls_total{operation="observe",platform="fake"} 2.0' in text
    assert 'flops_platform_call_errors_total{kind="transient",operation="observe",platform="fake"} 1.0' in text
    assert 'flops_reconciles_total{result="ok",trigger="change"} 1.0' in text
    assert 'flops_reconcile_duration_seconds_count{trigger="change"} 1.0' in text
    assert 'flops_projects{phase="Training"} 2.0' in text
    assert 'flops_projects{phase="Completed"} 0.0' in text


def test_login_uses_the_client_configuration() -> None:
    config = kubernetes.client.Configuration(host="https://10.0.0.1:443")
    config.api_key = {"BearerToken": "tok"}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    config.ssl_ca_cert = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    info = connection_info(config)
    assert (info.server, info.scheme, info.token, info.insecure) == ("https://10.0.0.1:443", "Bearer", "tok", False)
    assert info.ca_path == config.ssl_ca_cert


@pytest.mark.parametrize("args", [[], ["-n", "team-a", "-A"]])
def test_operator_needs_exactly_one_of_namespaces_or_all(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["operator", "--platform", "fake", *args])
    assert result.exit_code == 2
    assert "give -n NAMESPACE" in result.output


def test_operator_refuses_an_unknown_platform() -> None:
    result = CliRunner().invoke(app, ["operator", "--platform", "kubernetes", "-A"])
    assert result.exit_code == 2


async def test_secret_store_unreachable_is_a_transient_platform_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}")
    config.retries = 0
    store = SecretCredentials(kubernetes.client.ApiClient(config))
    try:
        with pytest.raises(TransientPlatformError, match="Kubernetes API unreachable"):
            await store.ensure(REF, ["ftp-password"])
    finally:
        await store.close()
