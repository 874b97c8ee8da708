"""`flops operator` as a user runs it: a separate process, a kubeconfig, signals to stop it."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import kubernetes.client
import pytest
import yaml

from flops_operator.models import FINALIZER, GROUP, PLURAL, VERSION

from .conftest import eventually, free_port, kubernetes_in_thread


@pytest.mark.parametrize("scope", [["-A"], ["-n", "team-a"]], ids=["all-namespaces", "one-namespace"])
def test_flops_operator_serves_projects_probe_and_metrics_until_stopped(tmp_path: Path, scope: list[str]) -> None:
    with kubernetes_in_thread() as (url, _emulator):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
        }))
        metrics_port, liveness_port = free_port(), free_port()
        log = (tmp_path / "operator.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "flops_operator", "operator", "--platform", "fake", *scope,
             "--metrics-port", str(metrics_port), "--liveness", f"http://127.0.0.1:{liveness_port}/healthz",
             "--resync-seconds", "1"],
            env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            stdout=log, stderr=subprocess.STDOUT)
        try:
            api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
            custom = kubernetes.client.CustomObjectsApi(api)
            kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": "team-a"}})
            custom.create_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FLOpsProject",
                "metadata": {"name": "digits", "namespace": "team-a"},
                "spec": {"task": {"name": "digits-mlp"}, "learners": {"replicas": 2}}})

            def ready():
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, "digits")
                conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}
                return conditions.get("Ready") == "True" and obj
            obj = eventually(ready, what="the project Ready under the `flops operator` process")
            assert FINALIZER in obj["metadata"]["finalizers"]
            assert obj["status"]["phase"] == "Training"

            with urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz", timeout=10) as rsp:
                assert rsp.status == 200
            def metrics():
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as rsp:
                    text = rsp.read().decode()
                # The pass is counted when its handler returns, just after its status is visible.
                return ('flops_projects{phase="Training"} 1.0' in text
                        and 'flops_reconciles_total{result="ok",trigger="change"}' in text) and text
            eventually(metrics, what="the Training project and its reconcile in /metrics")
            api.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
            log.close()
        output = (tmp_path / "operator.log").read_text()
        assert code == 0, output
        assert "Traceback" not in output, output



def kubeconfig_for(url: str, path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
    }))
    return path


@pytest.mark.parametrize("when", ["calling", "retrying-delete"])
def test_sigterm_while_oakestra_is_unreachable_stops_cleanly(tmp_path: Path, when: str) -> None:
    """Oakestra does not answer (a call hangs) or refuses connections (a delete is being retried):
    SIGTERM ends the operator with exit 0, no traceback, nothing of its locals printed."""
    with kubernetes_in_thread() as (url, _emulator), socket.socket() as oakestra:
        oakestra.bind(("127.0.0.1", 0))
        if when == "calling":
            oakestra.listen(64)  # connections are accepted by the kernel, never answered
        address = f"http://127.0.0.1:{oakestra.getsockname()[1]}"
        log = (tmp_path / "operator.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "flops_operator", "operator", "--platform", "oakestra", "-A",
             "--metrics-port", "0", "--liveness", "", "--resync-seconds", "1"],
            env={"KUBECONFIG": str(kubeconfig_for(url, tmp_path / "kubeconfig")), "PATH": "/usr/bin:/bin",
                 "HOME": str(tmp_path), "FLOPS_OAKESTRA_URL": address, "FLOPS_OAKESTRA_USERNAME": "Admin",
                 "FLOPS_OAKESTRA_PASSWORD": "Admin",
                 # A call in flight at SIGTERM fails while kopf still waits for the tasks it left
                 # (5 s): that failure must not surface (it did, as a 1,300-line traceback with locals).
                 "FLOPS_OAKESTRA_REQUEST_TIMEOUT": "3", "FLOPS_OAKESTRA_RETRIES": "1"},
            stdout=log, stderr=subprocess.STDOUT)
        try:
            api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
            custom = kubernetes.client.CustomObjectsApi(api)
            custom.create_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FLOpsProject",
                "metadata": {"name": "digits", "namespace": "team-a"},
                "spec": {"platform": "oakestra", "task": {"name": "digits-mlp"}}})

            def message() -> str:
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, "digits")
                return (obj.get("status") or {}).get("message") or ""
            if when == "calling":
                eventually(lambda: select.select([oakestra], [], [], 0)[0], what="a call to Oakestra in flight")
            else:
                eventually(lambda: "unavailable, retrying" in message(), what="the project retried")
                custom.delete_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, "digits")
                eventually(lambda: "cleanup failed" in message(), what="the delete retried")
            api.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
            log.close()
        output = (tmp_path / "operator.log").read_text()
        assert code == 0, output[-5000:]
        assert "Traceback" not in output and "OakestraUnavailable" not in output, output[-5000:]
