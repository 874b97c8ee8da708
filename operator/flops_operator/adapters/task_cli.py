"""`flops init NAME` writes a task folder that trains as it is; `flops task check PATH` tries one in seconds.

The check imports the task in this process, with torch or scikit-learn: it is imported when the command runs,
never at `flops` start-up (the operator's slim image has neither, and needs neither for its own commands).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from .task_templates import FRAMEWORKS, render

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

task_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                       help="Your own model: check a task folder.")


def module_name(name: str) -> str:
    """The task module of a folder NAME: wine -> wine_task, my-model -> my_model_task."""
    base = name.replace("-", "_")
    return base if base.endswith("task") else f"{base}_task"


def init_folder(name: str, framework: str, parent: Path) -> Path:
    """Write the folder parent/name; ValueError naming what is wrong (nothing is written then)."""
    if not NAME.match(name):
        raise ValueError(f"NAME {name!r}: lowercase letters, digits and '-', starting with a letter, at most 40 "
                         "(it names the folder, the task module and the project)")
    if framework not in FRAMEWORKS:
        raise ValueError(f"--framework {framework!r}: one of {', '.join(FRAMEWORKS)}")
    folder = parent / name
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{folder} already exists and is not an empty folder: nothing written")
    files = render(name, module_name(name), framework)
    folder.mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        (folder / relative).write_text(text)
    return folder


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        name: str = typer.Argument(..., help="The task's name: its folder, module (NAME_task.py) and project."),
        framework: str = typer.Option("torch", "--framework", help="torch (an nn.Module) or sklearn (a linear model)."),
        parent: Path = typer.Option(Path("."), "--dir", help="Where to create the folder NAME."),
    ) -> None:
        """Write a task folder that trains as it is: the task module (edit its two functions), requirements.txt,
        pyproject.toml, project.yaml (flops run), README.md and a test."""
        try:
            folder = init_folder(name, framework, parent)
        except (ValueError, OSError) as exc:
            typer.echo(f"flops init: {exc}", err=True)
            raise typer.Exit(EXIT_USAGE)
        module = module_name(name)
        typer.echo(f"wrote {folder}/: {module}.py (edit make_model and load_data), requirements.txt, pyproject.toml, "
                   f"project.yaml, README.md, test_{module}.py")
        typer.echo(f"next: flops task check {folder}    then: flops run {folder / 'project.yaml'}")

    app.add_typer(task_app, name="task")


@task_app.command()
def check(
    path: Path = typer.Argument(..., help="The task's folder."),
    entrypoint: Optional[str] = typer.Option(
        None, "--entrypoint", help="module:attribute (default: tool.flops.task in the folder's pyproject.toml)."),
    import_only: bool = typer.Option(False, "--import-only", help="Import and check the contract only."),
    export: bool = typer.Option(True, "--export/--no-export",
                                help="Rehearse the final model's export to MLflow's format too (a second or two)."),
) -> None:
    """Import the task, check its contract, train 2 simulated learners for one round, average them, predict the
    input example and rehearse the model's export, in this process, in seconds. One line per problem (exit 1).
    The task's requirements.txt must be installed here."""
    try:
        from flops_learner.check import check_task
    except ImportError as exc:
        typer.echo(f"flops task check needs the FL packages (pip install 'flops-operator[fl]'): {exc}", err=True)
        raise typer.Exit(EXIT_USAGE)
    report = check_task(path, entrypoint, import_only=import_only, export=export)
    for line in report.done:
        typer.echo(f"ok: {line}")
    for line in report.problems:
        typer.echo(f"problem: {line}")
    if report.problems:
        typer.echo(f"{path}: {len(report.problems)} problem(s) ({report.seconds:.1f}s)")
        raise typer.Exit(EXIT_PROBLEMS)
    typer.echo(f"{path}: {report.entrypoint} passed ({report.seconds:.1f}s)")
