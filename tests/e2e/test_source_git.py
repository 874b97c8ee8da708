"""resolve_commit and fetch against a real Git server (git http-backend on loopback, Basic auth): the refs a
spec may name, the folder fetched, and each bad input failing fast with the field it concerns."""

from __future__ import annotations

import secrets
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from flops_builder.errors import BuildError
from flops_builder.source import GitCredentials, GitSource, fetch, resolve_commit, tree_digest
from tests.gitserver import GitServer, closed_port, git_server, open_git_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e

TASK = {"tasks/wine/wine_task.py": "task = None\n", "tasks/wine/requirements.txt": "pyjokes==0.8.3\n",
        "tasks/wine/run.sh": "#!/bin/sh\n", "README.md": "# wine\n"}


def login(server: GitServer) -> GitCredentials:
    return GitCredentials.from_secret(server.credentials)


def failure(call) -> BuildError:
    started = time.monotonic()
    with pytest.raises(BuildError) as error:
        call()
    assert time.monotonic() - started < 20, "a failure must come fast, not after a prompt or a hang"
    assert "\n" not in error.value.message
    return error.value


def test_resolve_branches_tags_and_shas(git_server):
    first = git_server.commit("wine", TASK, "first")
    second = git_server.commit("wine", {"tasks/wine/wine_task.py": "task = 2\n"}, "second")
    git_server.tag("wine", "v1", first, annotated=True)
    git_server.tag("wine", "light", first)
    git_server.branch("wine", "dev", first)
    creds, url = login(git_server), git_server.url("wine")
    for ref, commit in [("main", second), ("dev", first), ("v1", first), ("light", first),
                        ("refs/tags/v1", first), (first, first)]:
        assert resolve_commit(GitSource(url, ref, credentials=creds)) == commit, ref
    third = git_server.commit("wine", {"tasks/wine/wine_task.py": "task = 3\n"}, "third")
    assert resolve_commit(GitSource(url, "main", credentials=creds)) == third
    # The login is sent only when the server asks for it.
    assert git_server.requests[0].endswith(" -")


def test_fetch_a_path_of_a_commit(git_server, tmp_path):
    commit = git_server.commit("wine", TASK, "first", executable=("tasks/wine/run.sh",))
    git_server.commit("wine", {"tasks/wine/wine_task.py": "task = 'later'\n"}, "later")
    src = GitSource(git_server.url("wine"), "main", "tasks/wine", login(git_server))
    folder = fetch(src, commit, tmp_path / "src")
    assert folder == tmp_path / "src" / "tasks" / "wine"
    assert (folder / "wine_task.py").read_text() == "task = None\n"  # that commit, not the branch tip
    assert (folder / "run.sh").stat().st_mode & stat.S_IXUSR
    assert not (tmp_path / "src" / ".git").exists()
    # The same content written by hand has the same digest: the digest names content, not a checkout.
    copy = tmp_path / "copy"
    for name in ("wine_task.py", "requirements.txt", "run.sh"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text(TASK[f"tasks/wine/{name}"])
    (copy / "run.sh").chmod(0o755)
    assert tree_digest(folder) == tree_digest(copy)


def test_fetch_falls_back_when_the_server_refuses_a_sha(tmp_path):
    """The old protocol sends only branch and tag tips: an older commit needs the branches fetched."""
    with GitServer(tmp_path / "git", protocol_v2=False) as server:
        old = server.commit("wine", TASK, "old")
        server.commit("wine", {"tasks/wine/wine_task.py": "task = 'new'\n"}, "new")
        folder = fetch(GitSource(server.url("wine"), "main", "tasks/wine"), old, tmp_path / "src")
        assert (folder / "wine_task.py").read_text() == "task = None\n"
        error = failure(lambda: fetch(GitSource(server.url("wine"), "main"), "1" * 40, tmp_path / "other"))
        assert (error.step, error.field) == ("fetch", "spec.task.source.git.ref")
        assert "1111111111" in error.message


def test_a_server_without_login(open_git_server, tmp_path):
    commit = open_git_server.commit("wine", TASK, "first")
    src = GitSource(open_git_server.url("wine"), "main", "tasks/wine")
    assert resolve_commit(src) == commit
    assert (fetch(src, commit, tmp_path / "src") / "wine_task.py").is_file()


def test_a_token_alone_logs_in_as_x_access_token(tmp_path):
    token = secrets.token_urlsafe(16)
    with GitServer(tmp_path / "git", username="x-access-token", password=token) as server:
        commit = server.commit("wine", TASK, "first")
        assert resolve_commit(GitSource(server.url("wine"), "main", credentials=GitCredentials.from_secret(
            {"token": token + "\n"}))) == commit


def test_wrong_password(git_server):
    git_server.commit("wine", TASK, "first")
    creds = GitCredentials.from_secret({"username": "flops", "password": "wrong-password-1234"})
    error = failure(lambda: resolve_commit(GitSource(git_server.url("wine"), "main", credentials=creds)))
    assert (error.step, error.field) == ("resolve", "spec.task.source.git.credentialsSecret")
    assert "refused the login" in error.message and "Authentication failed" in error.message
    assert "wrong-password-1234" not in error.message and git_server.password not in error.message


def test_missing_credential_fails_instead_of_prompting(git_server, tmp_path):
    commit = git_server.commit("wine", TASK, "first")
    error = failure(lambda: resolve_commit(GitSource(git_server.url("wine"), "main")))
    assert (error.step, error.field) == ("resolve", "spec.task.source.git.credentialsSecret")
    assert "asks for a login and none was given" in error.message
    error = failure(lambda: fetch(GitSource(git_server.url("wine"), "main"), commit, tmp_path / "src"))
    assert (error.step, error.field) == ("fetch", "spec.task.source.git.credentialsSecret")


def test_unknown_ref(git_server):
    git_server.commit("wine", TASK, "first")
    error = failure(lambda: resolve_commit(GitSource(git_server.url("wine"), "no-such-branch",
                                                     credentials=login(git_server))))
    assert (error.step, error.field) == ("resolve", "spec.task.source.git.ref")
    assert "no branch or tag 'no-such-branch'" in error.message and "(branches: main)" in error.message


def test_unknown_commit(git_server, tmp_path):
    git_server.commit("wine", TASK, "first")
    error = failure(lambda: fetch(GitSource(git_server.url("wine"), "main", credentials=login(git_server)),
                                  "2" * 40, tmp_path / "src"))
    assert (error.step, error.field) == ("fetch", "spec.task.source.git.ref")
    assert list((tmp_path / "src").iterdir()) == []


def test_unreachable_repository():
    url = f"http://127.0.0.1:{closed_port()}/wine.git"
    error = failure(lambda: resolve_commit(GitSource(url, "main")))
    assert (error.step, error.field) == ("resolve", "spec.task.source.git.url")
    assert error.message.startswith(f"cannot reach {url}: Failed to connect")


def test_no_such_repository(git_server):
    error = failure(lambda: resolve_commit(GitSource(git_server.url("nope"), "main", credentials=login(git_server))))
    assert (error.step, error.field) == ("resolve", "spec.task.source.git.url")
    assert "no Git repository at" in error.message


def test_missing_path(git_server, tmp_path):
    commit = git_server.commit("wine", TASK, "first")
    src = GitSource(git_server.url("wine"), "main", "tasks/beer", login(git_server))
    error = failure(lambda: fetch(src, commit, tmp_path / "src"))
    assert (error.step, error.field) == ("path", "spec.task.source.git.path")
    assert "path 'tasks/beer' does not exist" in error.message and "(top level: README.md, tasks/)" in error.message
    assert list((tmp_path / "src").iterdir()) == []  # nothing left behind


def test_a_server_that_never_answers_times_out_and_leaves_no_process():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (the kernel does), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/wine.git"
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        started = time.monotonic()
        with pytest.raises(BuildError) as error:
            resolve_commit(GitSource(url, "main"), timeout=2)
        assert time.monotonic() - started < 10
        assert error.value.field == "spec.task.source.git.url" and "did not finish within 2 s" in error.value.message
        assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()


def test_ssh_key_to_an_unreachable_host(tmp_path):
    """ssh runs with the key file (GIT_SSH_COMMAND) and BatchMode: a refused connection, no prompt, no key left."""
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key-but-ssh-fails-before-using-it\n" \
          "-----END OPENSSH PRIVATE KEY-----\n"
    creds = GitCredentials.from_secret({"ssh-privatekey": key})
    leftovers = set(Path(tempfile.gettempdir()).glob("flops-git-*"))
    error = failure(lambda: resolve_commit(GitSource(f"ssh://git@127.0.0.1:{closed_port()}/wine.git", "main",
                                                     credentials=creds)))
    assert error.field == "spec.task.source.git.url" and "Connection refused" in error.message
    assert set(Path(tempfile.gettempdir()).glob("flops-git-*")) <= leftovers


def test_concurrent_fetches(git_server, tmp_path):
    commit = git_server.commit("wine", TASK, "first")
    src = GitSource(git_server.url("wine"), "main", "tasks/wine", login(git_server))
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            fetch(src, commit, tmp_path / f"src{i}")
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len({tree_digest(tmp_path / f"src{i}" / "tasks" / "wine") for i in range(3)}) == 1
