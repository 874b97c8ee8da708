"""The `flops` command: crd, validate, run, operator, init, task check."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, List, Optional

import typer
import yaml

from . import __version__
from .models import InvalidProject, parse_project

# No rich tracebacks: they print every frame's local variables (credentials included) and ran to
# thousands of lines; a plain traceback is enough for a bug, and expected failures are one line.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="FLOps: federated learning with MLOps on Oakestra, as an operator.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"flops-operator {__version__}")
        raise typer.Exit()


@app.callback()
def _flops(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                        help="Print the version of flops-operator and exit.")) -> None:
    # Only the global options; each command is its own function below and in the adapters.
    pass


def load_documents(path: Path) -> Iterator[tuple[int, object]]:
    """Every YAML document of a file (empty documents skipped), numbered from 1."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    for index, doc in enumerate(yaml.safe_load_all(text), start=1):
        if doc is not None:
            yield index, doc


@app.command()
def crd() -> None:
    """Print the FLOpsProject CustomResourceDefinition generated from the models."""
    from .crd import crd_yaml

    typer.echo(crd_yaml(), nl=False)


@app.command()
def validate(files: List[Path] = typer.Argument(..., help="Manifest files ('-' for stdin).")) -> None:
    """Check FLOpsProject manifests offline; one line per problem naming the field (exit 1)."""
    bad = 0
    for path in files:
        try:
            documents = list(load_documents(path))
        except (OSError, yaml.YAMLError) as exc:
            typer.echo(f"{path}: cannot read: {exc}".replace("\n", " "))
            bad += 1
            continue
        if not documents:
            typer.echo(f"{path}: no FLOpsProject in the file")
            bad += 1
        for index, doc in documents:
            where = f"{path}" if len(documents) == 1 else f"{path}[{index}]"
            try:
                project = parse_project(doc)
            except InvalidProject as exc:
                bad += 1
                for problem in exc.problems:
                    typer.echo(f"{where}: {problem}")
            else:
                typer.echo(f"{where}: ok ({project.ref.key})", err=True)
    raise typer.Exit(1 if bad else 0)


def _register_commands() -> None:
    # Each front door lives in its own adapter module and adds its own command.
    from .adapters.kopf_cli import register as register_operator
    from .adapters.local_cli import register as register_run
    from .adapters.task_cli import register as register_task

    register_run(app)
    register_operator(app)
    register_task(app)


_register_commands()


def main(argv: Optional[list[str]] = None) -> None:
    app(args=argv, prog_name="flops")


if __name__ == "__main__":
    main()
