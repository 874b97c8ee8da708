"""`flops init` writes a task folder that passes `flops task check` as it is, for both frameworks; bad input is
refused naming what is wrong."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
import yaml
from typer.testing import CliRunner

from flops_operator.adapters.task_cli import init_folder, module_name
from flops_operator.cli import app
from flops_operator.models import parse_project

runner = CliRunner()


@pytest.mark.parametrize("framework, name", [("torch", "digits"), ("sklearn", "tumours")])
def test_init_then_check_passes(tmp_path, framework, name):
    made = runner.invoke(app, ["init", name, "--framework", framework, "--dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    folder = tmp_path / name
    module = f"{name}_task"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{module}.py", "requirements.txt", "pyproject.toml", "project.yaml", "README.md", f"test_{module}.py"])
    assert tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["flops"]["task"] == f"{module}:task"
    assert len((folder / f"{module}.py").read_text().splitlines()) <= 40  # small enough to read at a glance
    project = parse_project(yaml.safe_load((folder / "project.yaml").read_text()))
    assert project.spec.task.source.local == "."

    checked = runner.invoke(app, ["task", "check", str(folder)])
    assert checked.exit_code == 0, checked.output
    assert f"{folder}: {module}:task passed" in checked.output
    assert "ok: final model exported" in checked.output


def test_the_generated_test_passes_under_pytest(tmp_path):
    init_folder("tumours", "sklearn", tmp_path)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "tumours")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_check_reports_problems_and_exits_1(tmp_path):
    init_folder("broken", "sklearn", tmp_path)
    module = tmp_path / "broken" / "broken_task.py"
    module.write_text(module.read_text().replace("n_features=FEATURES", "n_features=FEATURES + 1"))
    result = runner.invoke(app, ["task", "check", str(tmp_path / "broken"), "--no-export"])
    assert result.exit_code == 1
    problems = [line for line in result.output.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1 and "1 problem(s)" in result.output
    assert "learner 0: train one epoch failed" in problems[0] and "31 features" in problems[0]


def test_check_takes_another_entrypoint(tmp_path):
    init_folder("alt", "sklearn", tmp_path)
    (tmp_path / "alt" / "pyproject.toml").write_text("")
    missing = runner.invoke(app, ["task", "check", str(tmp_path / "alt"), "--import-only"])
    assert missing.exit_code == 1 and "no entrypoint" in missing.output
    given = runner.invoke(app, ["task", "check", str(tmp_path / "alt"), "--entrypoint", "alt_task:task", "--import-only"])
    assert given.exit_code == 0, given.output


@pytest.mark.parametrize("args, message", [
    (["init", "Bad_Name"], "NAME 'Bad_Name': lowercase letters, digits and '-'"),
    (["init", "1st"], "NAME '1st'"),
    (["init", "ok", "--framework", "jax"], "--framework 'jax': one of torch, sklearn"),
])
def test_init_refuses_bad_input(tmp_path, args, message):
    result = runner.invoke(app, [*args, "--dir", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_init_never_overwrites(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.py").write_text("x = 1\n")
    result = runner.invoke(app, ["init", "mine", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "already exists and is not an empty folder" in result.output
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["keep.py"]


@pytest.mark.parametrize("name, module", [("wine", "wine_task"), ("my-model", "my_model_task"), ("mytask", "mytask")])
def test_module_names(name, module):
    assert module_name(name) == module
