"""Running the `git` CLI with a timeout, and reading what went wrong from its stderr.

git's words are the best description of a failure (it knows whether the host did not answer or the login was
refused), so messages quote them; `classify` only decides which spec field a failure concerns. git may leave
helpers behind (git-remote-http, ssh) that hold its pipes: a timeout kills its whole process group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from flops_builder.errors import one_line, redact

# Checked in this order: the first kind whose words appear in stderr (lower-cased) wins.
_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("no-login", ("could not read username", "could not read password", "terminal prompts disabled")),
    ("unreachable", ("could not resolve host", "could not resolve hostname", "failed to connect",
                     "couldn't connect", "connection refused", "connection timed out", "operation timed out",
                     "no route to host", "network is unreachable", "connection reset", "empty reply from server",
                     "ssl certificate problem", "certificate verify failed", "server certificate verification failed",
                     "the requested url returned error: 5")),
    ("login-refused", ("authentication failed", "permission denied", "host key verification failed",
                       "access denied", "returned error: 401", "returned error: 403", "invalid username or password")),
    ("no-repository", ("not found", "does not appear to be a git repository", "returned error: 404")),
    ("unknown-commit", ("not our ref", "unadvertised object", "couldn't find remote ref", "no such remote ref")),
)
_QUOTED_URL = re.compile(r"\s*(?:for\s+)?'[a-zA-Z][a-zA-Z0-9+.-]*://[^']*'")
_UNABLE = re.compile(r"^unable to access:\s*")  # what is left of "unable to access '<url>': <reason>"
_PREFIX = re.compile(r"^(?:fatal|error|remote|ERROR|hint):\s*")
_SSH_GENERIC = "could not read from remote repository"
_BOILERPLATE = ("please make sure you have the correct access rights", "and the repository exists")


class GitFailure(Exception):
    def __init__(self, args: list[str], returncode: int | None, stderr: str, timed_out: bool = False):
        super().__init__(f"git {args[0] if args else ''} failed")
        self.returncode = returncode
        self.stderr = stderr
        self.timed_out = timed_out


def run_git(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    """git's stdout; GitFailure (with stderr) on a non-zero exit or past `timeout` seconds."""
    process = subprocess.Popen(["git", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # git and the helpers it started
        except ProcessLookupError:
            pass
        out, err = process.communicate()
        raise GitFailure(args, None, err, timed_out=True) from None
    if process.returncode != 0:
        raise GitFailure(args, process.returncode, err)
    return out


def classify(stderr: str, timed_out: bool = False) -> str:
    """timeout | no-login | unreachable | login-refused | no-repository | unknown-commit | other."""
    if timed_out:
        return "timeout"
    text = stderr.lower()
    for kind, words in _KINDS:
        if any(word in text for word in words):
            return kind
    return "other"


def git_message(stderr: str, secrets: tuple[str, ...] = ()) -> str:
    """The line of git's stderr that says what went wrong, without prefixes, quoted URLs and secrets.

    The last `fatal:` line, else the last `error:` line, else the last line; ssh's generic "Could not read from
    remote repository" gives way to the line before it (ssh's own reason); a `remote:` message from the server
    (e.g. "HTTP Basic: Access denied...") is added."""
    lines = [line.strip() for line in redact(stderr, secrets).splitlines()]
    lines = [line for line in lines if line and not line.lower().startswith(_BOILERPLATE)]
    if not lines:
        return ""
    index = _last(lines, "fatal:")
    if index is None:
        index = _last(lines, "error:")
    if index is None:
        index = len(lines) - 1
    if _SSH_GENERIC in lines[index].lower() and index > 0:
        index -= 1
    chosen = _clean(lines[index])
    remote = [_clean(line) for line in lines if line.startswith("remote:") and _clean(line)]
    if remote and remote[0].lower() not in chosen.lower():
        chosen = f"{chosen} (server: {remote[0]})"
    return one_line(redact(chosen, secrets))


def _last(lines: list[str], prefix: str) -> int | None:
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].lower().startswith(prefix):
            return index
    return None


def _clean(line: str) -> str:
    cleaned = _QUOTED_URL.sub("", _PREFIX.sub("", line)).strip(" .:")
    return _UNABLE.sub("", cleaned) or line
