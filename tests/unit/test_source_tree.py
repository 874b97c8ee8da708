"""What a source folder declares and how its content is named: tree_digest, default_entrypoint,
requirements_text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flops_builder.errors import BuildError
from flops_builder.source import default_entrypoint, requirements_text, tree_digest

FILES = {"task.py": "print('hi')\n", "pkg/__init__.py": "", "pkg/model.py": "W = 1\n", "requirements.txt": "numpy\n"}


def make(root: Path, files: dict[str, str] = FILES, executable: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755 if name in executable else 0o644)
    return root


def test_same_content_with_other_times_owners_modes_and_location_has_the_same_digest(tmp_path):
    a = make(tmp_path / "a")
    b = make(tmp_path / "elsewhere" / "b")
    for i, path in enumerate(sorted(b.rglob("*"))):
        os.utime(path, (1_000_000 + i, 2_000_000 + i))
    (b / "task.py").chmod(0o600)  # group/other bits do not count, only the owner's exec bit
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a).startswith("sha256:") and len(tree_digest(a)) == 7 + 64


def test_skips_git_pycache_and_pyc(tmp_path):
    a = make(tmp_path / "a")
    b = make(tmp_path / "b", {**FILES, ".git/HEAD": "ref: refs/heads/main\n", "pkg/__pycache__/model.cpython-311.pyc":
                              "x", "stale.pyc": "y", "pkg/.git/config": "z"})
    assert tree_digest(a) == tree_digest(b)


@pytest.mark.parametrize("change", [
    pytest.param(lambda root: (root / "pkg/model.py").write_text("W = 2\n"), id="content"),
    pytest.param(lambda root: (root / "pkg/model.py").rename(root / "pkg/model2.py"), id="rename"),
    pytest.param(lambda root: (root / "pkg/model.py").chmod(0o755), id="exec-bit"),
    pytest.param(lambda root: (root / "new.txt").write_text(""), id="new-empty-file"),
    pytest.param(lambda root: (root / "requirements.txt").unlink(), id="removed-file"),
    pytest.param(lambda root: (root / "link").symlink_to("task.py"), id="symlink-added"),
    pytest.param(lambda root: (root / "pkg/sub").mkdir() or (root / "pkg/sub/x.py").write_text(""), id="subfolder"),
])
def test_every_change_of_content_changes_the_digest(tmp_path, change):
    before = tree_digest(make(tmp_path / "a"))
    b = make(tmp_path / "b")
    change(b)
    assert tree_digest(b) != before


def test_a_symlink_counts_by_its_target_and_is_not_followed(tmp_path):
    a, b = make(tmp_path / "a"), make(tmp_path / "b")
    (a / "data").symlink_to("/nowhere/one", target_is_directory=True)
    (b / "data").symlink_to("/nowhere/two", target_is_directory=True)
    c = make(tmp_path / "c")
    (c / "data").symlink_to("/nowhere/one", target_is_directory=True)
    assert tree_digest(a) != tree_digest(b)
    assert tree_digest(a) == tree_digest(c)


def test_path_and_content_boundaries_are_unambiguous(tmp_path):
    a = make(tmp_path / "a", {"ab": "c"})
    b = make(tmp_path / "b", {"a": "bc"})
    assert tree_digest(a) != tree_digest(b)


def test_a_missing_folder_is_a_build_error(tmp_path):
    with pytest.raises(BuildError) as error:
        tree_digest(tmp_path / "missing")
    assert error.value.step == "path"


@pytest.mark.parametrize("pyproject, expected", [
    (None, None),
    ("[project]\nname = 'x'\n", None),
    ("[tool.flops]\ntask = 'wine_task:task'\n", "wine_task:task"),
    ("[tool.flops]\ntask = '  pkg.mod:make  '\n", "pkg.mod:make"),
    ("[tool.other]\ntask = 'a:b'\n", None),
])
def test_default_entrypoint(tmp_path, pyproject, expected):
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    assert default_entrypoint(tmp_path) == expected


@pytest.mark.parametrize("pyproject, words", [
    ("[tool.flops\ntask = 'a:b'\n", "not valid TOML"),
    ("[tool.flops]\ntask = 3\n", "must be a \"module:attribute\" string"),
    ("[tool.flops]\ntask = ''\n", "must be a \"module:attribute\" string"),
])
def test_a_bad_pyproject_names_the_file(tmp_path, pyproject, words):
    (tmp_path / "pyproject.toml").write_text(pyproject)
    with pytest.raises(BuildError) as error:
        default_entrypoint(tmp_path)
    assert (error.value.step, error.value.field) == ("entrypoint", "pyproject.toml")
    assert words in error.value.message and "\n" not in error.value.message


def test_requirements_text(tmp_path):
    assert requirements_text(tmp_path) == ""
    (tmp_path / "requirements.txt").write_text("numpy\npyjokes==0.8.3  # jokes\n")
    assert requirements_text(tmp_path) == "numpy\npyjokes==0.8.3  # jokes\n"
    (tmp_path / "requirements.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(BuildError) as error:
        requirements_text(tmp_path)
    assert (error.value.step, error.value.field) == ("requirements", "requirements.txt")
