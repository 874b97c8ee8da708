"""The local platform's Platform contract, with tiny Python children standing in for the workloads."""

from __future__ import annotations

import sys
from dataclasses import replace

import psutil
import pytest

from flops_operator.models import parse_project
from flops_operator.plan.desired import desired
from flops_operator.plan.logins import flower_credentials
from flops_operator.plan.services import Role
from tests.projects import fake_secret
from flops_operator.platforms.base import Platform, ServiceState, TransientPlatformError
from flops_operator.platforms.local import LOCAL_COMMANDS, LocalPlatform, RestartPolicy
from flops_operator.platforms.local.commands import LocalCommand, Recipe
from flops_operator.platforms.local.layout import MARKER_ENV
from flops_operator.platforms.local.ports import port_is_free
from flops_operator.platforms.local.probes import TcpProbe

# The aggregator listens on its SuperLink address until FLOPS_WORKDIR/exit holds an exit code.
AGGREGATOR = """
import os, pathlib, socket, sys, time
host, port = os.environ["FLOPS_SUPERLINK_ADDRESS"].rsplit(":", 1)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((host, int(port))); s.listen()
pathlib.Path(os.environ["FLOPS_WORKDIR"], "env").write_text(os.environ["TMPDIR"] + "\\n" + os.environ["%s"])
exit_file = pathlib.Path(os.environ["FLOPS_WORKDIR"], "exit")
while not exit_file.exists():
    time.sleep(0.05)
sys.exit(int(exit_file.read_text()))
""" % MARKER_ENV
LEARNER = "import time; time.sleep(60)"


def tiny(code):
    def build(service, argv, env, ctx):
        probe = TcpProbe(ctx.host, ctx.ports["superlink"]) if "superlink" in ctx.ports else None
        return LocalCommand(argv=[sys.executable, "-c", code], env=env, probe=probe)
    return build


# The training services' credentials (the Flower CA, the SuperLink's and the learners' keys), as the operator
# generates them.
SECRETS = {name: fake_secret(name) for name in flower_credentials(2)}


@pytest.fixture
def platform(tmp_path, monkeypatch):
    monkeypatch.setitem(LOCAL_COMMANDS, Role.aggregator, Recipe("flops-aggregator", tiny(AGGREGATOR)))
    monkeypatch.setitem(LOCAL_COMMANDS, Role.learner, Recipe("flops-learner", tiny(LEARNER)))
    plat = LocalPlatform(lambda ref: tmp_path / "state", stop_timeout=2,
                         policy=RestartPolicy(max_restarts=1, backoff_seconds=0.01))
    return plat  # each test closes it: the fixture stays synchronous


@pytest.fixture
def project():
    # An existing tracking server: the plan has only the training services.
    return parse_project({
        "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject", "metadata": {"name": "tiny"},
        "spec": {"task": {"name": "digits-mlp"}, "learners": {"replicas": 2},
                 "tracking": {"uri": "http://127.0.0.1:9"}},
    })


def services(project):
    return {s.name: s for s in desired(project, training_done=False)}


async def wait_state(platform, ref, name, *states):
    return await platform.process(ref, name).wait_for(*states)


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_it_is_a_platform(platform):
    assert isinstance(platform, Platform)
    await platform.close()


async def test_ensure_starts_a_process_and_observe_reports_it(platform, project, tmp_path):
    ref, agg = project.ref, services(project)["aggregator"]
    try:
        seen = await platform.ensure(ref, agg, SECRETS)
        assert seen.state is ServiceState.starting and seen.spec_hash == agg.spec_hash
        await wait_state(platform, ref, "aggregator", ServiceState.running)
        observed = (await platform.observe(ref)).services["aggregator"]
        assert observed.state is ServiceState.running and observed.address.startswith("127.0.0.1:")
        assert observed.external_address is None  # the SuperLink port is not published
        assert not port_is_free(int(observed.address.rsplit(":", 1)[1]))
        workdir = tmp_path / "state" / "services" / "aggregator"
        tmpdir, marker = (workdir / "env").read_text().splitlines()
        assert tmpdir == str(tmp_path / "state" / "tmp" / "aggregator")
        assert marker == f"{tmp_path / 'state'}::aggregator"
        assert (tmp_path / "state" / "logs" / "aggregator.log").exists()
    finally:
        await platform.close()
    assert not (tmp_path / "state" / "tmp" / "aggregator").exists()


async def test_ensure_is_idempotent_and_replaces_on_a_new_spec_keeping_the_port(platform, project):
    ref, agg = project.ref, services(project)["aggregator"]
    try:
        first = await platform.ensure(ref, agg, SECRETS)
        await wait_state(platform, ref, "aggregator", ServiceState.running)
        old_pid = platform.process(ref, "aggregator").pid
        again = await platform.ensure(ref, agg, SECRETS)
        assert again.service_id == f"pid {old_pid}" and platform.process(ref, "aggregator").pid == old_pid
        changed = replace(agg, env=agg.env + (("EXTRA", "1"),))
        replaced = await platform.ensure(ref, changed, SECRETS)
        assert replaced.spec_hash == changed.spec_hash and replaced.address == first.address
        assert not alive(old_pid)
        await wait_state(platform, ref, "aggregator", ServiceState.running)
    finally:
        await platform.close()


async def test_one_shot_outcomes_are_observed(platform, project, tmp_path):
    ref, agg = project.ref, services(project)["aggregator"]
    exit_file = tmp_path / "state" / "services" / "aggregator" / "exit"
    try:
        await platform.ensure(ref, agg, SECRETS)
        await wait_state(platform, ref, "aggregator", ServiceState.running)
        exit_file.write_text("4")
        await wait_state(platform, ref, "aggregator", ServiceState.failed)
        seen = (await platform.observe(ref)).services["aggregator"]
        assert seen.exit_code == 4 and seen.message.startswith("exit code 4")
        # A finished one-shot is not restarted.
        assert platform.process(ref, "aggregator").restarts == 0
    finally:
        await platform.close()


async def test_dependents_are_rendered_with_the_allocated_address(platform, project):
    ref, specs = project.ref, services(project)
    try:
        with pytest.raises(TransientPlatformError, match="aggregator does not run yet"):
            await platform.ensure(ref, specs["learner-0"], SECRETS)
        agg = await platform.ensure(ref, specs["aggregator"], SECRETS)
        await platform.ensure(ref, specs["learner-0"], SECRETS)
        env = platform.process(ref, "learner-0").launch.env
        assert env["FLOPS_SUPERLINK"] == agg.address
        assert env["FLOPS_CLIENTAPPIO_ADDRESS"].startswith("127.0.0.1:")
        assert env["FLOPS_CLIENTAPPIO_ADDRESS"] != agg.address
    finally:
        await platform.close()


async def test_remove_and_remove_all_stop_processes_and_free_ports(platform, project):
    ref, specs = project.ref, services(project)
    try:
        await platform.ensure(ref, specs["aggregator"], SECRETS)
        await wait_state(platform, ref, "aggregator", ServiceState.running)
        for name in ("learner-0", "learner-1"):
            await platform.ensure(ref, specs[name], SECRETS)
            await wait_state(platform, ref, name, ServiceState.running)
        pids = {n: platform.process(ref, n).pid for n in ("aggregator", "learner-0", "learner-1")}
        ports = set(platform.allocated_ports)
        await platform.remove(ref, "learner-1")
        await platform.remove(ref, "learner-1")  # absent: still success
        assert not alive(pids["learner-1"]) and alive(pids["learner-0"])
        assert set((await platform.observe(ref)).services) == {"aggregator", "learner-0"}
        await platform.remove_all(ref)
        assert (await platform.observe(ref)).services == {}
        assert not any(alive(p) for p in pids.values())
        assert platform.allocated_ports == frozenset()
        assert all(port_is_free(p) for p in ports)
    finally:
        await platform.close()


async def test_close_stops_every_project(platform, project):
    other = parse_project({**{"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject"},
                           "metadata": {"name": "other"},
                           "spec": {"task": {"name": "digits-mlp"}, "tracking": {"uri": "http://127.0.0.1:9"}}})
    await platform.ensure(project.ref, services(project)["aggregator"], SECRETS)
    await platform.ensure(other.ref, services(other)["aggregator"], SECRETS)
    pids = [platform.process(p.ref, "aggregator").pid for p in (project, other)]
    await platform.close()
    assert not any(alive(p) for p in pids if p)
    assert (await platform.observe(project.ref)).services == {}


@pytest.fixture(autouse=True)
def no_marked_process_left(tmp_path):
    yield
    root = str(tmp_path / "state")
    left = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_ENV, "").startswith(root) and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except (psutil.Error, OSError):
            continue
    assert not left, f"processes outlived the platform: {left}"
    tmp = tmp_path / "state" / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), "per-service TMPDIRs outlived their services"
