"""The `flops` command for a new user: its version, a missing extra, no cluster, a bad flag or choice: each is a line
saying what to do (or click's usage error), never a traceback; and every option says what it is for."""

from __future__ import annotations

import sys
from importlib import metadata

import click
import kubernetes.config.kube_config
import pytest
import typer
import yaml
from typer.testing import CliRunner

from flops_operator import __version__
from flops_operator.adapters.extras import missing_extra
from flops_operator.cli import app


def commands(command: click.Command, path: str = "flops"):
    """Every command and group of the CLI, with its full name."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, f"{path} {name}")


def test_every_option_and_argument_has_help():
    seen, missing = 0, []
    for path, command in commands(typer.main.get_command(app)):
        for param in command.params:
            seen += 1
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path}: {param.opts or param.name}")
    assert seen > 20  # the walk did reach the commands' parameters
    assert missing == []


def test_version_is_the_installed_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"flops-operator {metadata.version('flops-operator')}\n"
    assert __version__ == metadata.version("flops-operator")  # the images are tagged with __version__


@pytest.fixture
def without_psutil(monkeypatch):
    """As in an install without the [local] extra (the operator's slim image): psutil cannot be imported, and the
    modules of `flops run` that import it are imported afresh (the originals are put back afterwards)."""
    monkeypatch.setitem(sys.modules, "psutil", None)  # None: `import psutil` raises ModuleNotFoundError
    for name in list(sys.modules):
        if name.startswith(("flops_operator.platforms.local", "flops_operator.adapters.local_runner",
                            "flops_operator.adapters.live_view")):
            monkeypatch.delitem(sys.modules, name)


def test_run_without_the_local_extra_names_it_and_the_pip_command(tmp_path, without_psutil):
    manifest = tmp_path / "project.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject", "metadata": {"name": "demo"},
        "spec": {"platform": "local", "task": {"name": "digits-mlp"}}}))
    result = CliRunner().invoke(app, ["run", str(manifest), "--state-dir", str(tmp_path / "state")])
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback: an exit
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "flops run needs the [local] extra (module 'psutil' is not installed): pip install 'flops-operator[local]'"]
    assert not (tmp_path / "state").exists()


def test_a_missing_module_of_our_own_is_not_blamed_on_an_extra():
    assert missing_extra("run", "local", ModuleNotFoundError(name="flops_operator.platforms.nowhere")) is None
    assert "[local]" in missing_extra("run", "local", ModuleNotFoundError(name="pyftpdlib.handlers"))


def test_operator_without_a_kubeconfig_says_so_in_one_line_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    # The client reads KUBECONFIG once, at import: the default location it falls back on is what is patched.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    result = CliRunner().invoke(app, ["operator", "-A", "--platform", "fake"])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flops operator: no Kubernetes cluster to serve"), lines
    assert "KUBECONFIG or ~/.kube/config" in lines[0]


@pytest.mark.parametrize("argv, says", [
    (["--nope"], "No such option"),
    (["run", "project.yaml", "--nope"], "No such option"),
    (["run", "project.yaml", "-o", "json"], "'json' is not 'yaml'"),
    (["run", "project.yaml", "--log-level", "loud"], "'loud' is not one of"),
    (["operator", "-A", "--platform", "k8s"], "'k8s' is not one of"),
    (["operator", "-A", "--resync-seconds", "soon"], "'soon' is not a valid float"),
])
def test_a_bad_flag_or_choice_is_clicks_usage_error(argv, says):
    result = CliRunner().invoke(app, argv, prog_name="flops")
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Usage: flops" in result.output and says in result.output
    assert "Traceback" not in result.output


def test_the_choices_are_clicks_so_help_lists_them():
    run = typer.main.get_command(app).commands["run"]
    types = {param.name: param.type for param in run.params}
    assert isinstance(types["output"], click.Choice) and list(types["output"].choices) == ["yaml"]
    assert isinstance(types["log_level"], click.Choice)
    assert list(types["log_level"].choices) == ["debug", "info", "warning", "error"]
    assert "[yaml]" in CliRunner().invoke(app, ["run", "--help"]).output
