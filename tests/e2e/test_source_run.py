"""`flops run` with the task's own code (task.source): a local folder and a Git repository served on loopback,
trained to Completed with the model registered; a code-only change reuses the cached environment; each bad input
fails naming its field or file, with nothing left behind (the `workspace` fixture checks processes, ports and
temporary files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flops_operator.credentials import OPT_IN_LABEL
from tests.e2e.test_local_run import ROUND_BOUND_SECONDS, Run, flops_run, remember_ports, workspace  # noqa: F401
from tests.gitserver import closed_port, git_server  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WINE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "tasks" / "wine"
OPT_IN = {OPT_IN_LABEL: "true"}
"""The label a Secret the spec names must carry to be used."""
# A small pure-Python package the FL images do not have: the environment layered on them gets it.
EXTRA_REQUIREMENT = "pyjokes==0.8.3"


@pytest.fixture(autouse=True)
def private_cache(workspace, monkeypatch):  # noqa: F811
    """Sources and environments cached in the workspace (the runner's children inherit the variable)."""
    monkeypatch.setenv("FLOPS_CACHE_DIR", str(workspace.root / "cache"))


def wine_files(extra: str = "", requirements: str = EXTRA_REQUIREMENT + "\n") -> dict[str, str]:
    files = {p.name: p.read_text() for p in WINE.iterdir() if p.is_file()}
    files["requirements.txt"] = requirements
    files["wine_task.py"] += extra
    return files


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def project(name: str, source: dict, **task) -> dict:
    return {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject", "metadata": {"name": name},
            "spec": {"platform": "local", "task": {"source": source, **task},
                     "training": {"rounds": 2, "roundTimeoutSeconds": ROUND_BOUND_SECONDS},
                     "learners": {"replicas": 2}}}


def completed(run: Run, ws) -> dict:
    assert run.code == 0, "\n".join(run.lines[-40:])
    status = run.status
    remember_ports(ws, status)
    assert status["phase"] == "Completed"
    assert status["training"]["round"] == 2 and status["training"]["runStatus"] == "FINISHED"
    assert status["training"]["bestMetrics"]["eval_accuracy"] > 0.6
    assert status["model"]["version"] and status["model"]["alias"] == "champion"
    task = status["task"]
    assert task["buildPhase"] == "Built" and task["entrypoint"] == "wine_task:task"
    # The builder is gone once it has said what it built.
    assert "builder" not in {c["name"] for c in status["components"]}
    return status


def failed(run: Run, ws, field: str) -> dict:
    assert run.code == 1, "\n".join(run.lines[-40:])
    status = run.status
    remember_ports(ws, status)
    assert status["phase"] == "Failed"
    assert field in status["message"], status["message"]
    stalled = {c["type"]: c for c in status["conditions"]}["Stalled"]
    assert stalled["status"] == "True" and field in stalled["message"]
    # Nothing of the training was started, and the builder is gone.
    assert not {c["role"] for c in status["components"]} & {"aggregator", "learner", "builder"}
    return status


def test_a_local_folder_trains_and_a_code_change_reuses_the_environment(workspace):  # noqa: F811
    folder = write_folder(workspace.root / "wine", wine_files())
    first = completed(flops_run(workspace, project("wine", {"local": str(folder)})), workspace)
    assert first["task"]["cache"]["deps"] == "built" and first["task"]["tree"].startswith("sha256:")
    assert first["task"]["environment"] and first["model"]["version"] == "1"

    (folder / "wine_task.py").write_text((folder / "wine_task.py").read_text() + "\n# one more line of code\n")
    again = flops_run(workspace, project("wine", {"local": str(folder)}))
    second = completed(again, workspace)
    # Only the code changed: the same environment, found in the cache; a new training of the new code.
    assert second["task"]["environment"] == first["task"]["environment"]
    assert second["task"]["cache"]["deps"] == "hit"
    assert second["task"]["tree"] != first["task"]["tree"]
    assert second["training"]["identity"] != first["training"]["identity"]
    assert second["model"]["version"] == "2"
    assert any("deps hit" in line for line in again.lines), "the summary shows the environment cache hit"


def test_a_git_repository_with_a_login_trains_the_resolved_commit(workspace, git_server):  # noqa: F811
    files = {f"tasks/wine/{name}": text for name, text in wine_files().items()}
    commit = git_server.commit("models", {**files, "README.md": "team models\n"}, "wine task")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-login", "labels": OPT_IN},
              "stringData": {"username": git_server.username, "password": git_server.password}}
    manifest = project("gitwine", {"git": {"url": git_server.url("models"), "ref": "main", "path": "tasks/wine",
                                           "credentialsSecret": {"name": "git-login"}, "insecure": True}})
    status = completed(flops_run(workspace, manifest, documents=[secret]), workspace)
    assert status["task"]["commit"] == commit and status["task"]["ref"] == "main"
    assert git_server.password not in str(status)


def bad_folder(ws, files: dict[str, str]) -> dict:
    return {"local": str(write_folder(ws.root / "bad", files))}


BROKEN_IMPORT = "raise RuntimeError('the data share is not mounted')\n"
# Every other call names the weights differently: two learners' updates cannot be averaged.
UNEVEN_WEIGHTS = """
_weights = SklearnTask.get_weights
_calls = []
def _uneven(self, model):
    _calls.append(1)
    weights = _weights(self, model)
    return {k + "_x": v for k, v in weights.items()} if len(_calls) % 2 == 0 else weights
SklearnTask.get_weights = _uneven
"""


@pytest.mark.parametrize("case", ["unknown ref", "unreachable repository", "missing path", "missing Secret",
                                  "no entrypoint", "unresolvable requirement", "raises on import",
                                  "weights differ between learners"])
def test_bad_input_fails_naming_the_field_or_file_and_leaves_nothing(workspace, git_server, case):  # noqa: F811
    files = {f"tasks/wine/{name}": text for name, text in wine_files(requirements="").items()}
    git_server.commit("models", files, "wine task")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-login", "labels": OPT_IN},
              "stringData": {"username": git_server.username, "password": git_server.password}}
    git = {"url": git_server.url("models"), "ref": "main", "path": "tasks/wine",
           "credentialsSecret": {"name": "git-login"}, "insecure": True}  # the test's Git server speaks http
    documents = [secret]
    if case == "unknown ref":
        source, field = {"git": {**git, "ref": "no-such-branch"}}, "spec.task.source.git.ref"
    elif case == "unreachable repository":
        source = {"git": {**git, "url": f"http://127.0.0.1:{closed_port()}/models.git"}}
        field = "spec.task.source.git.url"
    elif case == "missing path":
        source, field = {"git": {**git, "path": "tasks/beer"}}, "spec.task.source.git.path"
    elif case == "missing Secret":
        source, field, documents = {"git": git}, "task.source.git.credentialsSecret", []
    elif case == "no entrypoint":
        files = wine_files(requirements="")
        del files["pyproject.toml"]
        source, field = bad_folder(workspace, files), "spec.task.entrypoint"
    elif case == "unresolvable requirement":
        source, field = bad_folder(workspace, wine_files(requirements="flops-no-such-package-xyz==1.0\n")), \
            "requirements.txt"
    elif case == "raises on import":
        files = wine_files(requirements="")
        files["wine_task.py"] = BROKEN_IMPORT + files["wine_task.py"]
        source, field = bad_folder(workspace, files), "spec.task.entrypoint"
    else:
        source, field = bad_folder(workspace, wine_files(extra=UNEVEN_WEIGHTS, requirements="")), \
            "spec.task.entrypoint"
    run = flops_run(workspace, project("bad", source), documents=documents)
    status = failed(run, workspace, field)
    if case == "raises on import":
        assert "the data share is not mounted" in status["message"]
    if case == "weights differ between learners":
        assert "differ" in status["message"] or "_x" in status["message"], status["message"]
    if case == "missing Secret":
        assert status["conditions"] and "git-login" in status["message"]
    else:
        assert status["task"]["buildPhase"] == "Failed"
