"""The one table that maps the plan's services to local processes."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from flops_operator.models import parse_project
from flops_operator.models.status import TaskStatus
from flops_operator.plan.desired import credential_names, desired
from flops_operator.plan.render import render_service
from flops_operator.plan.services import Role
from flops_operator.platforms.base import PermanentPlatformError
from flops_operator.platforms.local import LOCAL_COMMANDS, local_command
from flops_operator.platforms.local import mariadb
from flops_operator.platforms.local.commands import FTP_MODULE, LocalContext
from flops_operator.platforms.local.probes import HttpProbe, MysqlProbe, TcpProbe
from tests.projects import fake_secret

BIN = Path(sys.executable).parent


def project(backend: str = "sqlite", serving: bool = False):
    return parse_project({
        "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject", "metadata": {"name": "demo"},
        "spec": {"task": {"name": "digits-mlp"}, "learners": {"replicas": 2},
                 "tracking": {"backendStore": {"type": backend}}, "serving": {"enabled": serving}},
    })


class Resolver:
    """Stands in for the platform: fixed ports per service, the way the local platform renders."""

    PORTS = {("backend-store", "mysql"): 4001, ("artifact-store", "ftp"): 4002, ("tracking-server", "http"): 4003,
             ("aggregator", "superlink"): 4004, ("aggregator", "enroll"): 4005}

    def __init__(self, service, workdir):
        self.service, self._workdir = service, workdir
        self.secrets = {name: fake_secret(name) if name.startswith("flower-") else f"s3cret-{name}"
                        for name in credential_names(project("mysql").spec)}

    def address(self, service, port):
        return f"127.0.0.1:{self.PORTS[(service, port)]}"

    def host(self, service):
        return "127.0.0.1"

    def own_port(self, port):
        return self.PORTS.get((self.service.name, port), 4100)

    def bind(self):
        return "127.0.0.1"

    def secret(self, name):
        return self.secrets[name]

    def workdir(self):
        return str(self._workdir)


def build(service, tmp_path):
    resolver = Resolver(service, tmp_path / service.name)
    argv, env = render_service(service, resolver)
    ports = {p.name: resolver.own_port(p.name) for p in service.ports}
    ctx = LocalContext(ports=ports, workdir=tmp_path / service.name, bin_dir=BIN, python=sys.executable)
    return local_command(service, argv, env, ctx), resolver


@pytest.fixture
def stub_mariadb(tmp_path, monkeypatch):
    """Stand-ins for the MariaDB binaries, which only the end-to-end test runs for real."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for name in ("mariadbd", "mariadb-install-db"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(mariadb, "_SEARCH_PATH", str(bin_dir))
    return bin_dir


def by_name(proj, **kwargs):
    return {s.name: s for s in desired(proj, **kwargs)}


def test_the_table_covers_every_role():
    assert set(LOCAL_COMMANDS) == set(Role)


def building(tmp_path):
    """A project whose task comes from a local folder, while it is being built."""
    proj = parse_project({
        "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject", "metadata": {"name": "demo"},
        "spec": {"task": {"source": {"local": str(tmp_path)}}},
    })
    return replace(proj, code="sha256:0", task=TaskStatus(build_phase="Building", tree="sha256:0"))


def test_every_planned_service_has_a_local_command(tmp_path, stub_mariadb):
    for backend in ("sqlite", "mysql"):
        services = [*desired(project(backend), training_done=False),
                    *desired(project(backend, serving=True), training_done=True, model_registered=True),
                    *[s for s in desired(building(tmp_path), training_done=False) if s.role is Role.builder]]
        roles = set()
        for service in services:
            command, _ = build(service, tmp_path)
            assert Path(command.argv[0]).exists(), command.argv
            roles.add(service.role)
        assert roles == set(Role) - ({Role.backend_store} if backend == "sqlite" else set())


def test_tracking_server_runs_the_entrypoint_of_this_env_with_the_rendered_stores_and_logins(tmp_path):
    command, resolver = build(by_name(project("mysql"), training_done=False)["tracking-server"], tmp_path)
    argv = command.argv
    assert argv[0] == str(BIN / "flops-tracking-server")
    assert argv[argv.index("--port") + 1] == "4003" and argv[argv.index("--host") + 1] == "127.0.0.1"
    password = resolver.secrets["backend-password"]
    assert command.env["MLFLOW_BACKEND_STORE_URI"] == f"mysql+pymysql://mlflow:{password}@127.0.0.1:4001/mlflow"
    ftp = resolver.secrets["ftp-password"]
    assert command.env["MLFLOW_ARTIFACTS_DESTINATION"] == f"ftp://mlflow:{ftp}@127.0.0.1:4002/artifacts"
    logins = {name: resolver.secrets[name] for name in ("mlflow-admin-password", "mlflow-aggregator-password",
                                                         "mlflow-reader-password", "mlflow-flask-secret-key")}
    assert {command.env[k] for k in ("MLFLOW_AUTH_ADMIN_PASSWORD", "FLOPS_MLFLOW_AGGREGATOR_PASSWORD",
                                     "FLOPS_MLFLOW_READER_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")} == set(logins.values())
    assert command.env["FLOPS_WORKDIR"] == str(tmp_path / "tracking-server")
    # the store URIs and the logins carry passwords: they stay off the process list
    assert not any(secret in part for part in argv for secret in (password, ftp, *logins.values()))
    assert "--serve-artifacts" in argv
    # Not the plan's service address: exactly the loopback names the local server is reached by.
    assert argv[argv.index("--allowed-hosts") + 1] == "127.0.0.1:4003,localhost:4003,127.0.0.1,localhost"
    # ... which is all of them: no public address to learn later, no tag to watch (the entrypoint execs MLflow).
    assert "FLOPS_ALLOWED_HOSTS_TAG" not in command.env
    assert command.probe == HttpProbe("http://127.0.0.1:4003/health")


def test_sqlite_backend_is_a_file_in_the_tracking_servers_workdir(tmp_path):
    services = by_name(project("sqlite"), training_done=False)
    assert "backend-store" not in services
    command, _ = build(services["tracking-server"], tmp_path)
    uri = command.env["MLFLOW_BACKEND_STORE_URI"]
    assert uri == f"sqlite:///{tmp_path / 'tracking-server'}/mlflow.db"


def test_artifact_store_is_pyftpdlib_with_the_password_only_in_env(tmp_path):
    command, resolver = build(by_name(project(), training_done=False)["artifact-store"], tmp_path)
    assert command.argv[:3] == [sys.executable, "-m", FTP_MODULE]
    assert command.argv[command.argv.index("--user") + 1] == "mlflow"
    assert command.argv[command.argv.index("--root") + 1] == str(tmp_path / "artifact-store" / "ftp-root")
    assert command.env == {"FTP_PASS": resolver.secrets["ftp-password"]}
    assert resolver.secrets["ftp-password"] not in " ".join(command.argv)
    assert command.probe == TcpProbe("127.0.0.1", 4002)


def test_backend_store_is_a_private_mariadbd(tmp_path, stub_mariadb):
    command, resolver = build(by_name(project("mysql"), training_done=False)["backend-store"], tmp_path)
    workdir = tmp_path / "backend-store"
    assert command.argv[0] == str(stub_mariadb / "mariadbd") and "--no-defaults" in command.argv
    assert f"--datadir={workdir / 'data'}" in command.argv and "--port=4001" in command.argv
    assert "--bind-address=127.0.0.1" in command.argv and f"--init-file={workdir / 'init.sql'}" in command.argv
    # No password in its env, only the file modes mariadbd takes from there (its own umask: private state).
    assert command.env == {"UMASK": "0600", "UMASK_DIR": "0700"}
    assert resolver.secrets["backend-password"] not in " ".join(command.argv)
    assert command.probe == MysqlProbe("127.0.0.1", 4001, "mlflow", resolver.secrets["backend-password"], "mlflow")
    assert workdir / "init.sql" in command.leftovers and command.prepare is not None


def test_training_services_run_the_real_entrypoints_with_the_rendered_env(tmp_path):
    services = by_name(project(), training_done=False)
    aggregator, _ = build(services["aggregator"], tmp_path)
    assert aggregator.argv == [str(BIN / "flops-aggregator")]
    assert aggregator.env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:4003"
    assert aggregator.env["FLOPS_SUPERLINK_ADDRESS"] == "127.0.0.1:4004"
    assert aggregator.probe == TcpProbe("127.0.0.1", 4004)
    learner, _ = build(services["learner-1"], tmp_path)
    assert learner.argv == [str(BIN / "flops-learner")]
    assert learner.env["FLOPS_SUPERLINK"] == "127.0.0.1:4004" and learner.env["FLOPS_PARTITION_ID"] == "1"
    assert learner.env["FLOPS_WORKDIR"] == str(tmp_path / "learner-1")
    assert learner.probe is None


def test_a_plan_that_drifted_from_the_table_is_refused(tmp_path):
    from dataclasses import replace

    service = replace(by_name(project(), training_done=False)["aggregator"], command=("python", "-m", "other"))
    with pytest.raises(PermanentPlatformError, match="expects 'flops-aggregator'"):
        build(service, tmp_path)


def test_missing_mariadbd_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(mariadb, "_SEARCH_PATH", str(tmp_path))
    with pytest.raises(PermanentPlatformError, match="mariadb-server"):
        build(by_name(project("mysql"), training_done=False)["backend-store"], tmp_path)


def test_init_sql_quotes_names_and_passwords():
    sql = mariadb.init_sql("mlflow", "mlflow", "it's\\x")
    assert "IDENTIFIED BY 'it''s\\\\x'" in sql
    assert sql.count("CREATE DATABASE IF NOT EXISTS `mlflow`") == 1
    assert "ALTER USER 'mlflow'@'%'" in sql
