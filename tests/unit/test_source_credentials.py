"""Git credentials from a Secret, the environment git runs in (the login in env vars and 0600 files only), and
ref resolution over a stubbed `git ls-remote`."""

from __future__ import annotations

import shlex
import stat

import pytest

from flops_builder import source
from flops_builder.errors import BuildError
from flops_builder.source import (GitCredentials, GitSource, git_env, parse_ls_remote, resolve_commit,
                                  source_path)

KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
       "-----END OPENSSH PRIVATE KEY-----")


@pytest.mark.parametrize("data, expected", [
    ({}, GitCredentials()),
    ({"username": "bob", "password": "pw"}, GitCredentials("bob", "pw")),
    ({"password": "pw"}, GitCredentials("x-access-token", "pw")),
    ({"token": "ghp_abc\n"}, GitCredentials("x-access-token", "ghp_abc")),
    ({"username": " bob \n", "token": "t"}, GitCredentials("bob", "t")),
    ({"username": "bob", "password": "pw", "token": "t"}, GitCredentials("bob", "pw")),  # password first
    ({"username": "bob"}, GitCredentials("bob", None)),
    ({"password": "", "token": "  \n"}, GitCredentials()),
    ({"password": " pass with spaces \n"}, GitCredentials("x-access-token", " pass with spaces ")),
    ({"ssh-privatekey": KEY}, GitCredentials(ssh_key=KEY + "\n")),
    ({"ssh-privatekey": KEY + "\n\n", "known_hosts": "h ssh-ed25519 AAAA\n"},
     GitCredentials(ssh_key=KEY + "\n", known_hosts="h ssh-ed25519 AAAA")),
])
def test_from_secret(data, expected):
    assert GitCredentials.from_secret(data) == expected


def test_repr_shows_no_secret():
    creds = GitCredentials.from_secret({"username": "bob", "password": "hunter22", "ssh-privatekey": KEY})
    assert "hunter22" not in repr(creds) and "OPENSSH" not in repr(creds)
    assert "hunter22" not in repr(GitSource("https://h/x.git", "main", "", creds))


def test_password_login_goes_to_a_helper_scoped_to_the_host_through_env(tmp_path):
    env = git_env(GitCredentials("bob", "hunter22"), "https://Git.Example.com:8443/team/w.git", tmp_path,
                  base={"PATH": "/usr/bin", "GIT_DIR": "/elsewhere", "GIT_TRACE": "1", "GIT_SSL_CAINFO": "/ca.pem",
                        "GIT_ASKPASS": "/bin/echo", "SSH_ASKPASS": "/bin/echo"})
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_GLOBAL"] and env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_SSL_CAINFO"] == "/ca.pem" and env["PATH"] == "/usr/bin"
    assert "GIT_DIR" not in env and "GIT_TRACE" not in env and env["GIT_ASKPASS"] == "" and "SSH_ASKPASS" not in env
    config = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert config["credential.helper"] == ""
    helper = config["credential.https://git.example.com:8443.helper"]
    assert "hunter22" not in helper and "bob" not in helper  # the helper reads them from env at run time
    assert env["FLOPS_GIT_HELPER_USERNAME"] == "bob" and env["FLOPS_GIT_HELPER_PASSWORD"] == "hunter22"
    assert "hunter22" not in env["GIT_SSH_COMMAND"]
    assert list(tmp_path.iterdir()) == []


def test_no_login_no_helper(tmp_path):
    env = git_env(None, "https://h/x.git", tmp_path, base={})
    assert env["GIT_CONFIG_COUNT"] == "1" and "FLOPS_GIT_HELPER_PASSWORD" not in env
    assert "BatchMode=yes" in env["GIT_SSH_COMMAND"]  # no passphrase or host-key prompt either


def test_a_password_is_not_offered_to_an_ssh_url(tmp_path):
    env = git_env(GitCredentials("bob", "pw"), "git@h:team/x.git", tmp_path, base={})
    assert env["GIT_CONFIG_COUNT"] == "1" and "FLOPS_GIT_HELPER_PASSWORD" not in env


@pytest.mark.parametrize("known_hosts, checking", [(None, "StrictHostKeyChecking=no"),
                                                   ("h ssh-ed25519 AAAA", "StrictHostKeyChecking=yes")])
def test_ssh_key_in_a_0600_file(tmp_path, known_hosts, checking):
    env = git_env(GitCredentials(ssh_key=KEY + "\n", known_hosts=known_hosts), "ssh://git@h/x.git", tmp_path, base={})
    command = shlex.split(env["GIT_SSH_COMMAND"])
    key = tmp_path / "id"
    assert command[command.index("-i") + 1] == str(key)
    assert key.read_text() == KEY + "\n" and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert checking in command and "IdentitiesOnly=yes" in command and "BatchMode=yes" in command
    assert "OPENSSH" not in env["GIT_SSH_COMMAND"]
    if known_hosts:
        assert (tmp_path / "known_hosts").read_text() == known_hosts + "\n"
        assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in command


def test_the_private_folder_is_private_and_removed(monkeypatch):
    seen = {}

    def fake_git(args, *, env, cwd, timeout):
        seen["cwd"] = cwd
        seen["mode"] = stat.S_IMODE(cwd.stat().st_mode)
        seen["key"] = (cwd / "id").exists()
        return "a" * 40 + "\trefs/heads/main\n"

    monkeypatch.setattr(source, "run_git", fake_git)
    resolve_commit(GitSource("ssh://git@h/x.git", "main", credentials=GitCredentials(ssh_key=KEY)))
    assert seen["mode"] == 0o700 and seen["key"] and not seen["cwd"].exists()


def test_no_secret_in_argv(monkeypatch, tmp_path):
    calls = []

    def fake_git(args, *, env, cwd, timeout):
        calls.append(args)
        if args[0] == "ls-remote":
            return "b" * 40 + "\trefs/heads/main\n"
        if "init" in args:
            (tmp_path / "dest" / ".git").mkdir()
        return ""

    monkeypatch.setattr(source, "run_git", fake_git)
    creds = GitCredentials.from_secret({"username": "bob", "password": "hunter22", "ssh-privatekey": KEY})
    src = GitSource("https://h/x.git", "main", "", creds)
    commit = resolve_commit(src)
    (tmp_path / "dest").mkdir()
    source.fetch(src, commit, tmp_path / "dest")
    assert [c[0] for c in calls] == ["ls-remote", "-c", "fetch", "-c"]
    flat = " ".join(" ".join(c) for c in calls)
    assert "hunter22" not in flat and "OPENSSH" not in flat and "bob" not in flat


def stub_ls_remote(monkeypatch, listing: str) -> list[list[str]]:
    calls = []

    def fake_git(args, *, env, cwd, timeout):
        calls.append(args)
        patterns = set(args[2:])
        return "".join(line + "\n" for line in listing.splitlines()
                       if line.split("\t")[1] in patterns or args[1] == "--heads" and "refs/heads/" in line)

    monkeypatch.setattr(source, "run_git", fake_git)
    return calls


A, B, T = "a" * 40, "b" * 40, "c" * 40
LISTING = f"{A}\tHEAD\n{A}\trefs/heads/main\n{B}\trefs/heads/dev\n{T}\trefs/tags/v1\n{B}\trefs/tags/v1^{{}}\n" \
          f"{A}\trefs/tags/light\n{B}\trefs/heads/both\n{A}\trefs/tags/both"


@pytest.mark.parametrize("ref, commit", [
    ("main", A), ("dev", B), ("v1", B), ("light", A), ("refs/heads/main", A), ("refs/tags/v1", B), ("HEAD", A),
    (" main ", A),
])
def test_resolve(monkeypatch, ref, commit):
    stub_ls_remote(monkeypatch, LISTING)
    assert resolve_commit(GitSource("https://h/x.git", ref)) == commit


def test_a_full_sha_is_returned_without_asking(monkeypatch):
    calls = stub_ls_remote(monkeypatch, LISTING)
    assert resolve_commit(GitSource("https://h/x.git", "ABCDEF" + "0" * 34)) == "abcdef" + "0" * 34
    assert resolve_commit(GitSource("https://h/x.git", "e" * 64)) == "e" * 64
    assert calls == []


@pytest.mark.parametrize("ref, words", [
    ("nope", "no branch or tag 'nope' in https://h/x.git (branches: both, dev, main)"),
    ("abc1234", "(a commit must be written as its full 40-character sha)"),
    ("both", "'both' is both a branch and a tag of https://h/x.git: write refs/heads/both or refs/tags/both"),
    ("", "is not a branch, tag or commit"),
    ("--upload-pack=evil", "is not a branch, tag or commit"),
])
def test_resolve_errors_name_the_ref(monkeypatch, ref, words):
    stub_ls_remote(monkeypatch, LISTING)
    with pytest.raises(BuildError) as error:
        resolve_commit(GitSource("https://h/x.git", ref))
    assert (error.value.step, error.value.field) == ("resolve", "spec.task.source.git.ref")
    assert words in error.value.message


@pytest.mark.parametrize("url", ["", "--upload-pack=touch /tmp/x", "ext::sh -c touch% /tmp/x"])
def test_bad_urls(monkeypatch, url):
    calls = stub_ls_remote(monkeypatch, LISTING)
    with pytest.raises(BuildError) as error:
        resolve_commit(GitSource(url, "main"))
    assert error.value.field == "spec.task.source.git.url" and calls == []


def test_parse_ls_remote():
    assert parse_ls_remote(f"{A}\trefs/heads/main\nwarning: x\n\n{T}\trefs/tags/v1\n{B}\trefs/tags/v1^{{}}\n") == {
        "refs/heads/main": A, "refs/tags/v1": T, "refs/tags/v1^{}": B}


@pytest.mark.parametrize("path, expected", [("", "."), (".", "."), ("tasks/wine", "tasks/wine"),
                                            ("tasks/wine/", "tasks/wine"), ("./tasks", "tasks")])
def test_source_path(path, expected):
    assert str(source_path(path)) == expected


@pytest.mark.parametrize("path", ["/etc", "../x", "tasks/../../x"])
def test_source_path_refuses_leaving_the_repository(path):
    with pytest.raises(BuildError) as error:
        source_path(path)
    assert (error.value.step, error.value.field) == ("path", "spec.task.source.git.path")
