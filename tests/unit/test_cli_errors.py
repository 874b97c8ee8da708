"""The command line never prints a rich traceback with local variables (slow, and a leak of whatever
the locals hold), and a platform failure that reaches it is one line and exit 1."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from flops_aggregator.__main__ import cli as aggregator_cli
from flops_learner.__main__ import cli as learner_cli
from flops_operator.adapters import kopf_cli
from flops_operator.cli import app
from flops_operator.platforms.oakestra import OakestraUnavailable


@pytest.mark.parametrize("command", [app, aggregator_cli, learner_cli], ids=["flops", "aggregator", "learner"])
def test_no_typer_app_prints_pretty_tracebacks_or_locals(command: typer.Typer) -> None:
    assert not (command.pretty_exceptions_enable and command.pretty_exceptions_show_locals)


def test_a_platform_failure_that_ends_the_operator_is_one_line_and_exit_1(monkeypatch) -> None:
    async def failing(*args, **kwargs):
        raise OakestraUnavailable("Oakestra login failed: TimeoutError")

    monkeypatch.setattr(kopf_cli, "run_operator", failing)
    monkeypatch.setattr(kopf_cli, "kube_config", lambda: None)
    monkeypatch.setattr(kopf_cli, "build_context", lambda *args, **kwargs: None)
    result = CliRunner().invoke(app, ["operator", "-A", "--platform", "fake"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "flops operator stopped: Oakestra login failed: TimeoutError (OakestraUnavailable)"]
