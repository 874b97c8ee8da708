"""`flops run FILE`: the whole project on this machine, until Completed or Failed."""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
import yaml
from rich.console import Console

from ..models import KIND, InvalidProject, Problem, Project, parse_project
from ..models.spec import Platform

if TYPE_CHECKING:
    from .local_runner import RunResult

EXIT_INVALID = 2


def load_manifest(path: Path) -> tuple[dict[str, Any], Project]:
    """The one FLOpsProject of a file, or InvalidProject naming what is wrong."""
    manifest, project, _ = load_run_input(path)
    return manifest, project


def load_run_input(path: Path) -> tuple[dict[str, Any], Project, dict[tuple[str, str], dict[str, str]]]:
    """The one FLOpsProject of a file and the Secrets given with it (v1 Secret documents, as kubectl applies
    them: the login spec.tracking.credentialsSecret names), by (namespace, name)."""
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


def secret_data(secret: dict[str, Any], default_namespace: str) -> tuple[tuple[str, str], dict[str, str]]:
    """A Secret document's (namespace, name) and its values (data is base64, stringData plain; stringData wins)."""
    meta = secret.get("metadata") or {}
    name = str(meta.get("name") or "")
    values: dict[str, str] = {}
    try:
        values.update({str(k): base64.b64decode(str(v)).decode() for k, v in (secret.get("data") or {}).items()})
    except (ValueError, UnicodeDecodeError):
        raise InvalidProject([Problem(f"Secret {name}: data", "values must be base64 (or use stringData)")]) from None
    values.update({str(k): str(v) for k, v in (secret.get("stringData") or {}).items()})
    return (str(meta.get("namespace") or default_namespace), name), values


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
        output: Optional[str] = typer.Option(None, "-o", "--output", help="Also print the final object as: yaml."),
        log_level: str = typer.Option("warning", "--log-level", help="The runner's own log lines (stderr): debug, "
                                      "info, warning, error."),
    ) -> None:
        """Run a project with its whole MLOps stack as local processes, until Completed or Failed.

        Exit 0 Completed, 1 Failed, 2 invalid input (nothing started), 130 interrupted.
        """
        err = Console(stderr=True)
        if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            err.print(f"--log-level: unknown level {log_level!r} (known: debug, info, warning, error)", markup=False)
            raise typer.Exit(EXIT_INVALID)
        logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        if output not in (None, "yaml"):
            err.print(f"-o/--output: unknown format {output!r} (known: yaml)", markup=False)
            raise typer.Exit(EXIT_INVALID)
        try:
            manifest, project, secrets = load_run_input(file)
        except InvalidProject as exc:
            for problem in exc.problems:
                err.print(f"{file}: {problem}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INVALID)
        # Imported here, not at the top: `flops operator` (the slim operator image) has none of the
        # local platform's dependencies (psutil, pyftpdlib, MLflow's server).
        from .live_view import LiveView
        from .local_runner import LocalRunner

        # With -o yaml stdout carries only the document; people read stderr.
        console = err if output == "yaml" else Console()
        with LiveView(console, project) as view:
            runner = LocalRunner(manifest, project, state_dir=state_dir, keep=keep, view=view, secrets=secrets)
            result = asyncio.run(runner.run())
        print_final(result, str(file), console, output)
        raise typer.Exit(result.exit_code)
