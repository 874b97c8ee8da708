"""`flops run FILE`: the whole project on this machine, until Completed or Failed."""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
import yaml
from rich.console import Console

from ..models import KIND, InvalidProject, Problem, Project, parse_project
from ..models.spec import Platform
from .extras import missing_extra

if TYPE_CHECKING:
    from ..credentials import ReferencedSecret
    from .local_runner import RunResult

EXIT_INVALID = 2


class OutputFormat(str, Enum):
    yaml = "yaml"


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def load_manifest(path: Path) -> tuple[dict[str, Any], Project]:
    """The one FLOpsProject of a file, or InvalidProject naming what is wrong."""
    manifest, project, _ = load_run_input(path)
    return manifest, project


def load_run_input(path: Path) -> tuple[dict[str, Any], Project, dict[tuple[str, str], ReferencedSecret]]:
    """The one FLOpsProject of a file and the Secrets given with it (v1 Secret documents, as kubectl applies
    them: the logins spec.tracking.credentialsSecret and task.source.git.credentialsSecret name), by (namespace,
    name); one is used only with the label flops.oakestra.io/credentials: "true", as in a cluster."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidProject([Problem("(file)", f"cannot read {path}: {exc}".replace("\n", " "))]) from None
    secrets = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Secret" and d.get("apiVersion") == "v1"]
    projects = [d for d in documents if not any(d is s for s in secrets)]
    if len(projects) != 1:
        raise InvalidProject([Problem("(file)", f"expected exactly one {KIND} document (and any v1 Secrets), "
                                                f"found {len(projects)}")])
    manifest = _local_source_from(projects[0], Path.cwd() if str(path) == "-" else path.resolve().parent)
    project = parse_project(manifest)
    if project.spec.platform is not Platform.local:
        raise InvalidProject([Problem("spec.platform", f"is {project.spec.platform.value!r}: flops run runs a project "
                                      "on this machine (platform: local); apply this one to a cluster running the operator")])
    return manifest, project, dict(secret_data(s, project.ref.namespace) for s in secrets)


def _local_source_from(manifest: Any, folder: Path) -> Any:
    """task.source.local is relative to the manifest's folder: made absolute here, where that is known."""
    try:
        local = manifest["spec"]["task"]["source"]["local"]
    except (KeyError, TypeError):
        return manifest
    if not isinstance(local, str) or not local or Path(local).is_absolute():
        return manifest
    manifest = copy.deepcopy(manifest)
    manifest["spec"]["task"]["source"]["local"] = str((folder / local).resolve())
    return manifest


def secret_data(secret: dict[str, Any], default_namespace: str) -> tuple[tuple[str, str], ReferencedSecret]:
    """A Secret document's (namespace, name), its values (data is base64, stringData plain; stringData wins) and its
    labels (the store uses it only with the opt-in label, as in a cluster)."""
    meta = secret.get("metadata") or {}
    name = str(meta.get("name") or "")
    values: dict[str, str] = {}
    try:
        values.update({str(k): base64.b64decode(str(v)).decode() for k, v in (secret.get("data") or {}).items()})
    except (ValueError, UnicodeDecodeError):
        raise InvalidProject([Problem(f"Secret {name}: data", "values must be base64 (or use stringData)")]) from None
    values.update({str(k): str(v) for k, v in (secret.get("stringData") or {}).items()})
    from ..credentials import ReferencedSecret  # here: the CLI's start needs none of the store's imports

    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        # The API server refuses them too (a YAML `true` is no string): say so rather than "not labelled".
        raise InvalidProject([Problem(f"Secret {name}: metadata.labels", "label values are strings: quote them, "
                                      'e.g. flops.oakestra.io/credentials: "true"')])
    return (str(meta.get("namespace") or default_namespace), name), ReferencedSecret(values, dict(labels))


def print_final(result: RunResult, manifest_path: str, console: Console, output: str | None) -> None:
    from .live_view import render_summary, ui_command

    console.print(render_summary(result.project, result.status, result.layout))
    # Outside the panel and unwrapped: a command people copy must not be cut by the terminal width.
    console.print("Open the MLflow UI: " + ui_command(result.project, result.layout, manifest_path),
                  markup=False, highlight=False, soft_wrap=True)
    if output == "yaml":
        document = {**result.manifest, "status": result.status.to_wire()}
        typer.echo(yaml.safe_dump(document, sort_keys=False), nl=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        file: Path = typer.Argument(..., help="FLOpsProject manifest ('-' for stdin)."),
        state_dir: Optional[Path] = typer.Option(
            None, "--state-dir", help="Where logs and MLflow data live (default ~/.flops/<namespace>/<name>)."),
        keep: bool = typer.Option(False, "--keep", help="Keep the tracking server up for its UI until Ctrl-C."),
        # Choices (click's): --help lists them, and anything else is a usage error (exit 2) before anything runs.
        output: Optional[OutputFormat] = typer.Option(
            None, "-o", "--output", help="Also print the final object (stdout) in this format."),
        log_level: LogLevel = typer.Option(LogLevel.warning, "--log-level", case_sensitive=False,
                                           help="The runner's own log lines (stderr)."),
    ) -> None:
        """Run a project with its whole MLOps stack as local processes, until Completed or Failed.

        Exit 0 Completed, 1 Failed, 2 invalid input or a missing extra (nothing started), 130 interrupted.
        """
        err = Console(stderr=True)
        logging.basicConfig(level=log_level.value.upper(), stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            manifest, project, secrets = load_run_input(file)
        except InvalidProject as exc:
            for problem in exc.problems:
                err.print(f"{file}: {problem}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INVALID)
        # Imported here, not at the top: `flops operator` (the slim operator image) has none of the
        # local platform's dependencies (psutil, pyftpdlib, MLflow's server).
        try:
            from .live_view import LiveView
            from .local_runner import LocalRunner
        except ModuleNotFoundError as exc:
            line = missing_extra("run", "local", exc)
            if line is None:
                raise
            typer.echo(line, err=True)
            raise typer.Exit(EXIT_INVALID) from None

        # With -o yaml stdout carries only the document; people read stderr.
        console = err if output is OutputFormat.yaml else Console()
        with LiveView(console, project) as view:
            runner = LocalRunner(manifest, project, state_dir=state_dir, keep=keep, view=view, secrets=secrets)
            result = asyncio.run(runner.run())
        print_final(result, str(file), console, output.value if output else None)
        raise typer.Exit(result.exit_code)
