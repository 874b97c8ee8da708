"""`flops operator` as a user runs it: a separate process, a kubeconfig, signals to stop it."""

from __future__ import annotations

import signal
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
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as rsp:
                text = rsp.read().decode()
            assert 'flops_projects{phase="Training"} 1.0' in text
            assert 'flops_reconciles_total{result="ok",trigger="change"}' in text
            api.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            log.close()
        output = (tmp_path / "operator.log").read_text()
        assert code == 0, output
        assert "Traceback" not in output, output
