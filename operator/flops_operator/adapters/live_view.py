"""What a person sees during `flops run`: phase, services, a rounds bar, and the summary at the end."""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from flops_tracking.contract import READER_USER

from ..models import FLOpsProjectStatus, Phase, Project
from ..models.spec import public_uri
from ..plan.logins import MLFLOW_READER_PASSWORD
from ..platforms.local import StateLayout
from ..reconcile import ReconcileResult
from ..redaction import SHAPES_ONLY

_STATE_STYLE = {"running": "green", "completed": "green", "starting": "yellow", "pending": "yellow",
                "failed": "bold red"}
_PHASE_STYLE = {Phase.Completed: "bold green", Phase.Failed: "bold red", Phase.Training: "bold cyan",
                Phase.Suspended: "bold yellow"}


def _metrics(values: dict[str, float], limit: int = 4) -> str:
    shown = sorted(values.items(), key=lambda kv: (not kv[0].startswith("eval_"), kv[0]))[:limit]
    return "  ".join(f"{k}={v:.4g}" for k, v in shown)


def render_status(project: Project, status: FLOpsProjectStatus) -> RenderableType:
    header = Text.assemble((f"{project.ref.key}  ", "bold"), (status.phase.value, _PHASE_STYLE.get(status.phase, "")),
                           f"  {status.message or ''}")
    services = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("service", "state", "address", "restarts", "message"):
        services.add_column(column, overflow="fold")
    for c in status.components:
        services.add_row(c.name, Text(c.state, _STATE_STYLE.get(c.state, "")), c.external_address or c.address or "",
                         str(c.restarts or ""), (c.message or "")[:120])
    t = status.training
    rounds = Table.grid(padding=(0, 1))
    eta = f"ETA {t.eta}" if t.eta and status.phase is Phase.Training else ""
    rounds.add_row("rounds", ProgressBar(total=max(t.total_rounds, 1), completed=t.round, width=30),
                   f"{t.round}/{t.total_rounds}", eta, _metrics(t.latest_metrics))
    parts: list[RenderableType] = [header, services, rounds]
    if status.mlflow.ui_url:
        parts.append(Text(f"MLflow UI: {status.mlflow.ui_url}", style="dim"))
    return Group(*parts)


def status_line(status: FLOpsProjectStatus) -> str:
    t = status.training
    states = ", ".join(f"{c.name} {c.state}" for c in status.components)
    return f"{status.phase.value}: {status.message or ''} | round {t.round}/{t.total_rounds} | {states}"


class LiveView:
    """A rich Live panel on a terminal; plain lines on change otherwise (logs, CI, pipes)."""

    def __init__(self, console: Console, project: Project) -> None:
        self.console = console
        self.project = project
        self._live: Live | None = None
        self._last_line = ""

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def update(self, result: ReconcileResult) -> None:
        if self._live is not None:
            self._live.update(render_status(self.project, result.status))
            return
        line = status_line(result.status)
        if line != self._last_line:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            self._last_line = line

    def note(self, text: str) -> None:
        # Notes carry error texts (a retry, why a run cannot start): shapes out, as in status.
        self.console.print(Text(SHAPES_ONLY(text), style="dim"))

    def keeping(self, status: FLOpsProjectStatus, layout: StateLayout | None = None) -> None:
        self.console.print(Text(f"Keeping the tracking server up at {status.mlflow.ui_url or status.mlflow.tracking_uri}"
                                " — press Ctrl-C to stop it.", style="bold"))
        hint = login_hint(self.project, layout) if layout is not None else None
        if hint:
            # Unwrapped: a command people copy must not be cut by the terminal width.
            self.console.print(hint, markup=False, highlight=False, soft_wrap=True)


def login_hint(project: Project, layout: StateLayout) -> str | None:
    """How to log in to the project's own tracking server read-only (the password itself is never printed)."""
    if project.spec.tracking.uri:
        return None
    return (f"Log in as {READER_USER} (read-only); its password: " + shlex.join([
        "python3", "-c", f"import json; print(json.load(open({str(layout.credentials)!r}))[{MLFLOW_READER_PASSWORD!r}])"]))


def ui_command(project: Project, layout: StateLayout, manifest_path: str) -> str:
    """How to look at this run's MLflow data after `flops run` has stopped the stack."""
    tracking = project.spec.tracking
    if tracking.uri:
        return f"open {public_uri(tracking.uri)}"
    if tracking.backend_store.type == "sqlite":
        artifacts = layout.ftp_artifacts if tracking.artifact_store.type == "ftp" else layout.local_artifacts
        return shlex.join(["mlflow", "server", "--backend-store-uri", f"sqlite:///{layout.sqlite_database}",
                           "--artifacts-destination", str(artifacts), "--port", "5000"])
    # The MariaDB datadir needs its private server: the runner starts the stack and keeps it up.
    return shlex.join(["flops", "run", manifest_path, "--state-dir", str(layout.root), "--keep"])


def render_summary(project: Project, status: FLOpsProjectStatus, layout: StateLayout) -> Panel:
    t, model = status.training, status.model
    lines = Table.grid(padding=(0, 2))
    lines.add_row("phase", Text(status.phase.value, _PHASE_STYLE.get(status.phase, "")))
    if status.message:
        lines.add_row("message", status.message)
    lines.add_row("rounds", t.progress)
    task = status.task
    if task is not None:
        version = f" @ {task.commit[:12]}" if task.commit else (f" (tree {task.tree[7:19]})" if task.tree else "")
        lines.add_row("task", f"{task.entrypoint or '?'} from {task.source}{version}")
        cache = task.cache
        if cache is not None or task.environment:
            hits = ", ".join(f"{k} {v}" for k, v in (cache.model_dump(exclude_none=True) if cache else {}).items())
            lines.add_row("build", (f"environment {task.environment[:12]}; " if task.environment else "")
                          + (hits or task.build_message or ""))
    if t.best_metrics:
        best = _metrics(t.best_metrics, limit=8)
        lines.add_row("best", f"{best}  (round {t.best_round})" if t.best_round is not None else best)
    if t.latest_metrics:
        lines.add_row("last round", _metrics(t.latest_metrics, limit=8))
    if model.version:
        alias = f", alias @{model.alias}" + ("" if model.promoted is not False else " not moved (did not beat it)")
        lines.add_row("model", f"{model.name} version {model.version}{alias if model.alias else ''}")
        if model.uri:
            lines.add_row("model uri", model.uri)
    if status.mlflow.run_id:
        lines.add_row("mlflow run", f"{status.mlflow.experiment_name} / {status.mlflow.run_id}")
    if not project.spec.tracking.uri:
        lines.add_row("mlflow login", f"{READER_USER} (read-only), while the server is up (--keep): password under "
                                      f"{MLFLOW_READER_PASSWORD!r} in {layout.credentials}")
    lines.add_row("mlflow data", str(layout.root))
    lines.add_row("logs", str(layout.root / "logs"))
    style = "green" if status.phase is Phase.Completed else "red"
    return Panel(lines, title=f"{project.ref.key}: {status.phase.value}", border_style=style, expand=False)
