"""The `flops run` loop with the local platform, tiny Python children standing in for the services."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import psutil
import pytest

from flops_operator.adapters.local_runner import LocalRunner
from flops_operator.models import Phase, parse_project
from flops_operator.pacing import Pacing
from flops_operator.plan.services import Role
from flops_operator.platforms.local import LOCAL_COMMANDS, RestartPolicy
from flops_operator.platforms.local.commands import LocalCommand, Recipe
from flops_operator.platforms.local.layout import MARKER_ENV
from flops_operator.platforms.local.probes import HttpProbe, TcpProbe

# Answers /health like the tracking server (and 404 to MLflow's API: no progress to read).
TRACKING = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""
AGGREGATOR = """
import os, pathlib, socket, sys, time
host, port = os.environ["FLOPS_SUPERLINK_ADDRESS"].rsplit(":", 1)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((host, int(port))); s.listen()
done = pathlib.Path(os.environ["FLOPS_WORKDIR"]).parent / "learner-0" / "trained"
while not done.exists():
    time.sleep(0.05)
sys.exit(int(os.environ.get("TINY_AGGREGATOR_EXIT", "0")))
"""
LEARNER = """
import os, pathlib, time
pathlib.Path(os.environ["FLOPS_WORKDIR"], "trained").touch()
time.sleep(60)
"""


FAST = Pacing(resync=0.05, quick=0.05, training=0.05, jitter=0.0)


def recipe(program, code, probe=None):
    def build(service, argv, env, ctx):
        port = next(iter(ctx.ports.values()), None)
        return LocalCommand(argv=[sys.executable, "-c", code, str(port)], env=env,
                            probe=probe(ctx) if probe else None)
    return Recipe(program, build)


@pytest.fixture
def tiny_commands(monkeypatch):
    monkeypatch.setitem(LOCAL_COMMANDS, Role.tracking_server, recipe(
        "flops-tracking-server", TRACKING, lambda ctx: HttpProbe(f"http://{ctx.host}:{ctx.ports['http']}/health")))
    monkeypatch.setitem(LOCAL_COMMANDS, Role.aggregator, recipe(
        "flops-aggregator", AGGREGATOR, lambda ctx: TcpProbe(ctx.host, ctx.ports["superlink"])))
    monkeypatch.setitem(LOCAL_COMMANDS, Role.learner, recipe("flops-learner", LEARNER))


def manifest():
    return {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject", "metadata": {"name": "tiny"},
            "spec": {"task": {"name": "digits-mlp"}, "learners": {"replicas": 2},
                     "tracking": {"artifactStore": {"type": "local"}}}}


def runner(tmp_path, **kwargs):
    doc = manifest()
    return LocalRunner(doc, parse_project(doc), state_dir=tmp_path / "state", pacing=FAST, stop_timeout=2,
                       policy=RestartPolicy(max_restarts=1, backoff_seconds=0.01), **kwargs)


def survivors(tmp_path):
    root = f"{tmp_path / 'state'}::"
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_ENV, "").startswith(root) and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.Error, OSError):
            continue
    return out


async def test_runs_until_completed_then_removes_everything(tmp_path, tiny_commands):
    result = await runner(tmp_path).run()
    assert result.status.phase is Phase.Completed and result.exit_code == 0
    assert result.status.condition("TrainingComplete").reason == "Succeeded"
    # The step that saw the aggregator complete removed the training services; the stack stayed.
    assert [c.name for c in result.status.components] == ["tracking-server"]
    assert result.status.mlflow.tracking_uri.startswith("http://127.0.0.1:")
    assert result.manifest["metadata"]["uid"].startswith("local-")
    assert not survivors(tmp_path)
    assert not (tmp_path / "state" / "credentials.json").exists()
    assert (tmp_path / "state" / "logs" / "learner-1.log").exists()


async def test_a_failing_aggregator_fails_the_run(tmp_path, tiny_commands, monkeypatch):
    monkeypatch.setenv("TINY_AGGREGATOR_EXIT", "5")
    result = await runner(tmp_path).run()
    assert result.status.phase is Phase.Failed and result.exit_code == 1
    assert result.status.message.startswith("aggregator failed: exit code 5")
    assert not survivors(tmp_path)


async def test_a_stack_service_that_keeps_crashing_fails_the_run(tmp_path, tiny_commands, monkeypatch):
    monkeypatch.setitem(LOCAL_COMMANDS, Role.tracking_server, recipe("flops-tracking-server", "import sys; sys.exit(9)"))
    result = await runner(tmp_path).run()
    assert result.status.phase is Phase.Failed and result.exit_code == 1
    assert "tracking-server failed: gave up after 1 restarts: exit code 9" in result.status.message
    # `flops run -o yaml` shows the conditions the cluster would: stalled, not ready, not reconciling.
    conditions = {c.type: (c.status, c.reason) for c in result.status.conditions}
    assert conditions["Stalled"] == ("True", "Stalled") and conditions["Ready"][0] == "False"
    assert conditions["Reconciling"] == ("False", "Stalled")
    assert not survivors(tmp_path)


async def test_sigterm_tears_everything_down(tmp_path, tiny_commands, monkeypatch):
    # The aggregator never finishes: only the signal ends this run.
    monkeypatch.setitem(LOCAL_COMMANDS, Role.learner, recipe("flops-learner", "import time; time.sleep(60)"))
    run = asyncio.create_task(runner(tmp_path).run())
    while not any(p.environ().get(MARKER_ENV, "").endswith("::learner-1") for p in survivors(tmp_path)):
        await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    result = await run
    assert result.interrupted and result.exit_code == 130
    assert not survivors(tmp_path)


async def test_keep_holds_the_stack_until_interrupted(tmp_path, tiny_commands):
    notes = []

    class View:
        def update(self, result):
            pass

        def note(self, text):
            pass

        def keeping(self, status, layout=None):
            notes.append(status.mlflow.tracking_uri)
            os.kill(os.getpid(), signal.SIGINT)

    result = await runner(tmp_path, keep=True, view=View()).run()
    assert notes and notes[0].startswith("http://127.0.0.1:")
    assert result.interrupted and result.status.phase is Phase.Completed and result.exit_code == 0
    assert not survivors(tmp_path)
