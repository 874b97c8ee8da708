"""A task's source: a Git ref resolved to a commit, that commit's folder fetched, and what the folder declares.

Git is the `git` CLI in subprocesses (the builder image installs Debian's git; no Python Git library), each call
bounded by a timeout. Credentials never reach argv, the URL, a log or an error message:
- user/password or token: a credential helper, scoped to the repository's scheme://host[:port], set through
  GIT_CONFIG_COUNT/KEY/VALUE; it prints the login from two environment variables of that git process only.
  Git sends it only after the server asked (HTTP 401).
- SSH key: written 0600 into a private (0700) temporary folder, used through GIT_SSH_COMMAND with
  IdentitiesOnly; with `known_hosts` the host key is checked against it (StrictHostKeyChecking=yes), without it
  the host key is NOT checked (StrictHostKeyChecking=no: a man in the middle could serve other code; give
  `known_hosts` in the Secret to prevent that).
- GIT_TERMINAL_PROMPT=0 and ssh BatchMode: a missing credential fails at once instead of waiting for a prompt.
- No user or system git config (GIT_CONFIG_GLOBAL=/dev/null, GIT_CONFIG_NOSYSTEM): the same behaviour on a
  laptop and in the builder; transports limited to http(s), ssh, git and file (no `ext::` commands).
Not supported: submodules and Git LFS files (fetched as their pointer files).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import stat
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from flops_builder.errors import BuildError, redact
from flops_builder.gitcli import GitFailure, classify, git_message, run_git

URL_FIELD = "spec.task.source.git.url"
REF_FIELD = "spec.task.source.git.ref"
PATH_FIELD = "spec.task.source.git.path"
SECRET_FIELD = "spec.task.source.git.credentialsSecret"
DEFAULT_USERNAME = "x-access-token"  # what GitHub, GitLab and Gitea accept with a token as the password

_FULL_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")  # SHA-1 or SHA-256 repositories
_SHORT_SHA = re.compile(r"[0-9a-fA-F]{7,39}")
_SKIPPED_DIRS = {".git", "__pycache__"}
_USER_VAR, _PASSWORD_VAR = "FLOPS_GIT_HELPER_USERNAME", "FLOPS_GIT_HELPER_PASSWORD"
# Answers git's "get" with the login from the environment; ignores "store"/"erase" (nothing is kept).
_HELPER = (f'!f() {{ test "$1" = get || exit 0; printf "username=%s\\npassword=%s\\n" '
           f'"${_USER_VAR}" "${_PASSWORD_VAR}"; }}; f')


@dataclass(frozen=True)
class GitCredentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssh_key: str | None = field(default=None, repr=False)
    known_hosts: str | None = field(default=None, repr=False)

    @classmethod
    def from_secret(cls, data: dict[str, str]) -> "GitCredentials":
        """From a Secret's (decoded) data: `username` + `password`, or `token` (the same as password), and/or
        `ssh-privatekey` (+ `known_hosts`). The username defaults to x-access-token when only a password or
        token is given. Empty values count as absent; the newline `echo` leaves at the end is dropped."""
        def value(key: str) -> str | None:
            text = (data.get(key) or "").strip("\r\n")
            return text if text.strip() else None

        password = value("password") or value("token")
        username = value("username")
        if username:
            username = username.strip()
        ssh_key = value("ssh-privatekey")
        if ssh_key:
            ssh_key = ssh_key.strip() + "\n"  # ssh refuses a key file without its final newline
        return cls(username=username or (DEFAULT_USERNAME if password else None), password=password,
                   ssh_key=ssh_key, known_hosts=value("known_hosts"))

    def secrets(self) -> tuple[str, ...]:
        """The values no message may contain."""
        return tuple(s for s in (self.password, self.ssh_key, self.known_hosts) if s)


@dataclass(frozen=True)
class GitSource:
    url: str
    ref: str
    path: str = ""
    credentials: GitCredentials | None = None


def resolve_commit(src: GitSource, timeout: float = 30) -> str:
    """The commit `src.ref` names now (git ls-remote): a branch, a tag (an annotated tag's commit), a full
    refs/... name or HEAD; a full hex sha is returned as it is, without asking the server."""
    ref = src.ref.strip()
    if _FULL_SHA.fullmatch(ref):
        return ref.lower()
    if not ref or ref.startswith("-"):
        raise BuildError("resolve", REF_FIELD, f"ref {ref!r} is not a branch, tag or commit")
    names = [ref] if ref.startswith("refs/") or ref == "HEAD" else [f"refs/heads/{ref}", f"refs/tags/{ref}"]
    url = _checked_url(src)
    with _session(src) as (env, work):
        patterns = [*names, *(f"{name}^{{}}" for name in names)]  # ls-remote lists a tag's commit only if asked
        listing = _git(src, "resolve", ["ls-remote", url, *patterns], env, work, timeout)
        refs = parse_ls_remote(listing)
        found = {name: refs.get(f"{name}^{{}}", refs.get(name)) for name in names}  # peeled tags first
        found = {name: sha for name, sha in found.items() if sha}
        if len(set(found.values())) > 1:
            raise BuildError("resolve", REF_FIELD,
                             f"{ref!r} is both a branch and a tag of {_shown(src)}: write refs/heads/{ref} or "
                             f"refs/tags/{ref}")
        if found:
            return next(iter(found.values()))
        hint = ""
        if _SHORT_SHA.fullmatch(ref):
            hint = " (a commit must be written as its full 40-character sha)"
        else:
            try:
                branches = sorted(n.removeprefix("refs/heads/") for n in parse_ls_remote(
                    _git(src, "resolve", ["ls-remote", "--heads", url], env, work, timeout)))
                if branches:
                    more = ", …" if len(branches) > 8 else ""
                    hint = f" (branches: {', '.join(branches[:8])}{more})"
            except BuildError:
                pass
        raise BuildError("resolve", REF_FIELD, f"no branch or tag {ref!r} in {_shown(src)}{hint}")


def parse_ls_remote(output: str) -> dict[str, str]:
    """`git ls-remote` lines ("<sha>\\t<refname>") as {refname: sha}."""
    refs = {}
    for line in output.splitlines():
        sha, _, name = line.strip().partition("\t")
        if name and _FULL_SHA.fullmatch(sha):
            refs[name] = sha.lower()
    return refs


def fetch(src: GitSource, commit: str, dest: Path, timeout: float = 120) -> Path:
    """The files of `commit` in `dest` (shallow: that commit only; no .git left behind); returns dest/src.path.

    Fetches the commit by its sha; when the server refuses that (old protocol, a commit that is no branch or tag
    tip), fetches its branches and tags instead. `dest` must be absent or empty; on failure it is left empty."""
    relative = source_path(src.path)
    if not _FULL_SHA.fullmatch(commit):
        raise ValueError(f"fetch needs a full commit sha, not {commit!r} (resolve_commit first)")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")
    try:
        _fetch_commit(src, commit, dest, timeout)
        return _source_folder(src, relative, commit, dest)
    except BaseException:
        for entry in dest.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        raise


def _fetch_commit(src: GitSource, commit: str, dest: Path, timeout: float) -> None:
    url = _checked_url(src)
    with _session(src) as (env, _work):
        deadline = _Deadline(timeout)
        _git(src, "fetch", ["-c", "init.defaultBranch=main", "init", "-q", str(dest)], env, dest, deadline.left())
        try:
            _git(src, "fetch", ["fetch", "-q", "--depth", "1", "--no-tags", url, commit], env, dest, deadline.left())
        except BuildError as error:
            if error.field != REF_FIELD:
                raise
            _git(src, "fetch", ["fetch", "-q", "--no-tags", url, "+refs/heads/*:refs/remotes/origin/*",
                                "+refs/tags/*:refs/tags/*"], env, dest, deadline.left())
            try:
                _git(src, "fetch", ["cat-file", "-e", f"{commit}^{{commit}}"], env, dest, deadline.left())
            except BuildError:
                raise BuildError("fetch", REF_FIELD,
                                 f"commit {commit} is on no branch or tag of {_shown(src)}") from None
        _git(src, "fetch", ["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit], env, dest,
             deadline.left())
    shutil.rmtree(dest / ".git")


def _source_folder(src: GitSource, relative: PurePosixPath, commit: str, dest: Path) -> Path:
    folder = dest.joinpath(*relative.parts)
    if not folder.resolve().is_relative_to(dest.resolve()):
        raise BuildError("path", PATH_FIELD, f"path {src.path!r} leads out of the repository (a symlink)")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in dest.iterdir())
        listing = f" (top level: {', '.join(top[:10])}{', …' if len(top) > 10 else ''})" if top else ""
        raise BuildError("path", PATH_FIELD,
                         f"path {src.path!r} {what} in {_shown(src)} at commit {commit[:12]}{listing}")
    return folder


def source_path(path: str) -> PurePosixPath:
    """The source folder inside the repository, relative ("" or "." is the top); refuses absolute paths and ..."""
    relative = PurePosixPath(path.strip() or ".")
    if relative.is_absolute() or ".." in relative.parts:
        raise BuildError("path", PATH_FIELD, f"path {path!r} must be a folder inside the repository, "
                                             "relative to its top (no leading / and no ..)")
    return relative


def tree_digest(folder: Path) -> str:
    """"sha256:<hex>" of the folder's files: their sorted relative paths, kinds (file, executable file,
    symlink) and contents. Modification times, owners and permissions other than the owner's exec bit do not
    count (Git keeps only that bit); .git, __pycache__ and *.pyc are skipped."""
    if not folder.is_dir():
        raise BuildError("path", None, f"{folder} is not a folder")
    entries = []
    for top, dirs, files in os.walk(folder):
        base = Path(top)
        links = [d for d in dirs if (base / d).is_symlink()]  # os.walk lists them but does not descend
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and d not in links]
        for name in [*files, *links]:
            if name.endswith(".pyc"):
                continue
            full = base / name
            relative = full.relative_to(folder).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                entries.append((relative, "link", hashlib.sha256(os.readlink(full).encode()).hexdigest()))
            elif stat.S_ISREG(mode):
                kind = "exec" if mode & stat.S_IXUSR else "file"
                entries.append((relative, kind, _file_sha256(full)))
    digest = hashlib.sha256()
    for relative, kind, content in sorted(entries):
        digest.update(f"{kind} {len(relative)}:{relative} {content}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def default_entrypoint(folder: Path) -> str | None:
    """The source's pyproject.toml `[tool.flops] task` ("module:attribute"), or None."""
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BuildError("entrypoint", "pyproject.toml", f"pyproject.toml is not valid TOML: {error}") from None
    task = data.get("tool", {}).get("flops", {}).get("task")
    if task is None:
        return None
    if not isinstance(task, str) or not task.strip():
        raise BuildError("entrypoint", "pyproject.toml",
                         f'pyproject.toml [tool.flops] task must be a "module:attribute" string, not {task!r}')
    return task.strip()


def requirements_text(folder: Path) -> str:
    """The source's requirements.txt, or "" when it has none."""
    path = folder / "requirements.txt"
    if not path.is_file():
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise BuildError("requirements", "requirements.txt", f"requirements.txt is not UTF-8 text: {error}") from None


def git_env(credentials: GitCredentials | None, url: str, private_dir: Path,
            base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every git process for one source: `base` (os.environ) without the GIT_* variables
    that would change what git does (only TLS and proxy settings kept), plus the login as described above.
    Writes the SSH key (and known_hosts) into `private_dir`, which must be private (0700)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("GIT_") or k.startswith(("GIT_SSL_", "GIT_PROXY_", "GIT_HTTP_"))}
    env.pop("SSH_ASKPASS", None)
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_ALLOW_PROTOCOL": "http:https:ssh:git:file", "GIT_ASKPASS": "", "LC_ALL": "C"})
    config = [("credential.helper", "")]  # no helper from anywhere else
    creds = credentials or GitCredentials()
    origin = _origin(url)
    if creds.password and origin:
        config.append((f"credential.{origin}.helper", _HELPER))
        env[_USER_VAR] = creds.username or DEFAULT_USERNAME
        env[_PASSWORD_VAR] = creds.password
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]
    if creds.ssh_key:
        key = _private_file(private_dir / "id", creds.ssh_key)
        ssh += ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
        if creds.known_hosts:
            hosts = _private_file(private_dir / "known_hosts", creds.known_hosts.strip() + "\n")
            ssh += ["-o", f"UserKnownHostsFile={hosts}", "-o", "StrictHostKeyChecking=yes"]
        else:  # documented: without known_hosts the server's host key is not checked
            ssh += ["-o", f"UserKnownHostsFile={os.devnull}", "-o", "StrictHostKeyChecking=no",
                    "-o", "LogLevel=ERROR"]
    env["GIT_SSH_COMMAND"] = shlex.join(ssh)
    env["GIT_SSH_VARIANT"] = "ssh"
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env


# --- internals ---------------------------------------------------------------------------------------------


@contextmanager
def _session(src: GitSource) -> Iterator[tuple[dict[str, str], Path]]:
    """git's environment for `src` and a private working folder (0700), removed afterwards with the key in it."""
    with tempfile.TemporaryDirectory(prefix="flops-git-") as private:
        work = Path(private)
        yield git_env(src.credentials, src.url, work), work


def _git(src: GitSource, step: str, args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    secrets = src.credentials.secrets() if src.credentials else ()
    try:
        return run_git(args, env=env, cwd=cwd, timeout=timeout)
    except GitFailure as failure:
        kind = classify(failure.stderr, timed_out=failure.timed_out)
        if kind == "login-refused" and not (src.credentials and (src.credentials.password or src.credentials.ssh_key)):
            kind = "no-login"  # e.g. ssh's "Permission denied (publickey)" with no key given
        detail = git_message(failure.stderr, secrets) or f"git exited with status {failure.returncode}"
        url = _shown(src)
        field, message = {
            "timeout": (URL_FIELD, f"git {args[0]} {url} did not finish within {timeout:.0f} s"),
            "no-login": (SECRET_FIELD, f"{url} asks for a login and none was given: name a Secret with "
                                       f"username/password, token or ssh-privatekey in {SECRET_FIELD}"),
            "login-refused": (SECRET_FIELD, f"{url} refused the login from {SECRET_FIELD}: {detail}"),
            "unreachable": (URL_FIELD, f"cannot reach {url}: {detail}"),
            "no-repository": (URL_FIELD, f"no Git repository at {url}: {detail}"),
            "unknown-commit": (REF_FIELD, f"{url} has no commit {args[-1]}: {detail}"),
        }.get(kind, (URL_FIELD, f"git {args[0]} {url} failed: {detail}"))
        raise BuildError(step, field, message) from None


def _checked_url(src: GitSource) -> str:
    url = src.url.strip()
    if not url or url.startswith("-") or "::" in url.split("/")[0]:
        raise BuildError("resolve", URL_FIELD, f"{_shown(src)!r} is not a Git URL (https://, ssh:// or "
                                               "user@host:path)")
    return url


def _shown(src: GitSource) -> str:
    """The URL as messages show it: without a login someone wrote into it."""
    return redact(src.url.strip(), src.credentials.secrets() if src.credentials else ())


def _origin(url: str) -> str | None:
    """scheme://host[:port] of an http(s) URL: the only place the login is sent to (None: not HTTP)."""
    try:
        parts = urlsplit(url.strip())
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return None
    if parts.scheme in ("http", "https") and parts.hostname:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
        return f"{parts.scheme}://{host}{port}"
    return None


def _private_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Deadline:
    """The time left of one overall timeout, for a sequence of git calls."""

    def __init__(self, seconds: float):
        self._clock = time.monotonic
        self._end = self._clock() + seconds

    def left(self) -> float:
        return max(0.1, self._end - self._clock())
