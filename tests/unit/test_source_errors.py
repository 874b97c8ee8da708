"""Failures read from git's and pip's own words: which spec field they concern, and one secret-free line."""

from __future__ import annotations

import pytest

from flops_builder.environment import pip_failure
from flops_builder.errors import BuildError, one_line, redact
from flops_builder.gitcli import classify, git_message

SSH_TAIL = ("fatal: Could not read from remote repository.\n\n"
            "Please make sure you have the correct access rights\nand the repository exists.\n")

# (stderr as git 2.39 prints it, kind, the message line)
GIT_FAILURES = [
    ("fatal: could not read Username for 'http://127.0.0.1:37035': terminal prompts disabled\n",
     "no-login", "could not read Username: terminal prompts disabled"),
    ("fatal: Authentication failed for 'http://127.0.0.1:37035/r.git/'\n", "login-refused", "Authentication failed"),
    ("remote: HTTP Basic: Access denied. The provided password or token is incorrect.\n"
     "fatal: Authentication failed for 'https://gitlab.example.com/team/wine.git/'\n", "login-refused",
     "Authentication failed (server: HTTP Basic: Access denied. The provided password or token is incorrect)"),
    ("fatal: unable to access 'https://git.example.com/t/w.git/': The requested URL returned error: 403\n",
     "login-refused", "The requested URL returned error: 403"),
    ("git@github.com: Permission denied (publickey).\r\n" + SSH_TAIL, "login-refused",
     "git@github.com: Permission denied (publickey)"),
    ("Host key verification failed.\r\n" + SSH_TAIL, "login-refused", "Host key verification failed"),
    ("fatal: repository 'http://127.0.0.1:37035/nope.git/' not found\n", "no-repository", "repository not found"),
    ("remote: Repository not found.\nfatal: repository 'https://github.com/t/w.git/' not found\n", "no-repository",
     "repository not found"),
    ("fatal: 'nowhere/repo.git' does not appear to be a git repository\n" + SSH_TAIL, "no-repository",
     "'nowhere/repo.git' does not appear to be a git repository"),
    ("fatal: unable to access 'http://127.0.0.1:1/r.git/': Failed to connect to 127.0.0.1 port 1 after 0 ms: "
     "Couldn't connect to server\n", "unreachable",
     "Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server"),
    ("fatal: unable to access 'http://nonexistent.invalid/r.git/': Could not resolve host: nonexistent.invalid\n",
     "unreachable", "Could not resolve host: nonexistent.invalid"),
    ("ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n" + SSH_TAIL, "unreachable",
     "ssh: connect to host 127.0.0.1 port 1: Connection refused"),
    ("ssh: Could not resolve hostname git.nowhere: Name or service not known\r\n" + SSH_TAIL, "unreachable",
     "ssh: Could not resolve hostname git.nowhere: Name or service not known"),
    ("fatal: unable to access 'https://git.example.com/w.git/': SSL certificate problem: self-signed certificate\n",
     "unreachable", "SSL certificate problem: self-signed certificate"),
    ("fatal: unable to access 'https://git.example.com/w.git/': The requested URL returned error: 503\n",
     "unreachable", "The requested URL returned error: 503"),
    ("fatal: remote error: upload-pack: not our ref 1111111111111111111111111111111111111111\n", "unknown-commit",
     "remote error: upload-pack: not our ref 1111111111111111111111111111111111111111"),
    ("error: Server does not allow request for unadvertised object 1111111111111111111111111111111111111111\n",
     "unknown-commit", "Server does not allow request for unadvertised object " + "1" * 40),
    ("fatal: couldn't find remote ref refs/heads/nope\n", "unknown-commit", "couldn't find remote ref refs/heads/nope"),
    ("error: something unusual\nfatal: the remote end hung up unexpectedly\n", "other",
     "the remote end hung up unexpectedly"),
    ("", "other", ""),
]


@pytest.mark.parametrize("stderr, kind, message", GIT_FAILURES)
def test_git_failures(stderr, kind, message):
    assert classify(stderr) == kind
    assert git_message(stderr) == message


def test_a_timeout_is_its_own_kind():
    assert classify("", timed_out=True) == "timeout"


@pytest.mark.parametrize("stderr, secrets, message", [
    ("fatal: unable to access 'https://bob:hunter22@git.example.com/w.git/': Could not resolve host: x\n", (),
     "Could not resolve host: x"),
    ("remote: the token tok-1234567890 is expired\nfatal: Authentication failed for 'https://h/w.git/'\n",
     ("tok-1234567890",), "Authentication failed (server: the token *** is expired)"),
    ("fatal: could not fetch https://bob:hunter22@git.example.com/w.git\n", (),
     "could not fetch https://git.example.com/w.git"),
])
def test_git_messages_carry_no_secret(stderr, secrets, message):
    assert git_message(stderr, secrets) == message


@pytest.mark.parametrize("text, secrets, expected", [
    ("https://user:pw@host/x.git and ssh://git@host/y", (), "https://host/x.git and ssh://host/y"),
    ("token abc123 and abc1234", ("abc123", "abc1234"), "token *** and ***"),
    ("a b", ("a",), "a b"),  # too short to be told from ordinary words
    ("no secret here", (None, ""), "no secret here"),
    ("key line MIIEowIBAAKCAQEAx7 leaked", ("-----BEGIN KEY-----\nMIIEowIBAAKCAQEAx7\n-----END KEY-----\n",),
     "key line *** leaked"),
])
def test_redact(text, secrets, expected):
    assert redact(text, secrets) == expected


def test_one_line():
    assert one_line("  a\n b\t c  ") == "a b c"
    assert one_line("x" * 500, limit=10) == "x" * 9 + "…"


def test_build_error():
    error = BuildError(step="fetch", field="spec.task.source.git.url", message="cannot reach\nit")
    assert str(error) == "cannot reach it"
    assert error.as_dict() == {"step": "fetch", "field": "spec.task.source.git.url", "message": "cannot reach it"}
    assert BuildError("path", None, "x").field is None
    with pytest.raises(ValueError):
        BuildError("compile", None, "x")


PIP_NOT_FOUND = """Looking in indexes: https://pypi.org/simple
ERROR: Could not find a version that satisfies the requirement flops-no-such-package-xyz==1.0 (from versions: none)
ERROR: No matching distribution found for flops-no-such-package-xyz==1.0
"""
PIP_CONFLICT = """ERROR: Cannot install a==1 and b==2 because these package versions have conflicting dependencies.

The conflict is caused by:
    a 1 depends on c<1

To fix this you could try to:
1. loosen the range of package versions you've specified

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""
PIP_OFFLINE = """WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after \
connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object>: Failed to \
establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/pyjokes/
ERROR: Could not find a version that satisfies the requirement pyjokes (from versions: none)
ERROR: No matching distribution found for pyjokes
"""
PIP_BUILD = """  error: subprocess-exited-with-error
  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for broken
ERROR: Failed to build installable wheels for some pyproject.toml based projects (broken)
"""


@pytest.mark.parametrize("output, expected", [
    (PIP_NOT_FOUND, "No matching distribution found for flops-no-such-package-xyz==1.0"),
    (PIP_CONFLICT, "Cannot install a==1 and b==2 because these package versions have conflicting dependencies."),
    (PIP_OFFLINE, "No matching distribution found for pyjokes (the package index was not reachable)"),
    (PIP_BUILD, "Failed to build installable wheels for some pyproject.toml based projects (broken)"),
    ("Collecting x\nKilled\n", "Killed"),
    ("", "pip failed without a message"),
    ("ERROR: Could not install from https://bob:pw@index.example.com/x.whl\n",
     "Could not install from https://index.example.com/x.whl"),
])
def test_pip_failure(output, expected):
    assert pip_failure(output) == expected
