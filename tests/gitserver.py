"""A real Git server on a free loopback port for tests: bare repositories served by `git http-backend`.

`git http-backend` is Git's own smart-HTTP CGI program; a small `http.server` in a thread runs it per request,
optionally behind Basic auth, so clients speak the same protocol (v2 when asked, as git 2.26+ does) they speak
to GitHub or GitLab. Tests publish commits with `GitServer.commit`, which commits in a local clone and pushes to
the bare repository on disk (no credential involved).

    from tests.gitserver import git_server          # the fixture: a server with Basic auth
    def test_x(git_server):
        sha = git_server.commit("wine", {"tasks/wine/task.py": "..."}, "first")
        url, creds = git_server.url("wine"), {"username": git_server.username, "password": git_server.password}

`GitServer(root, protocol_v2=False)` serves the old protocol, whose upload-pack refuses to send a commit that
is not a branch or tag tip (the case where a client must fall back from fetching by sha).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

GIT_TIMEOUT = 60  # a bound for hangs; every local git call here takes milliseconds

# Fixed identity and no user or system config: the same commits whatever machine runs the tests.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "flops tests", "GIT_AUTHOR_EMAIL": "tests@flops.invalid",
    "GIT_COMMITTER_NAME": "flops tests", "GIT_COMMITTER_EMAIL": "tests@flops.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git with the tests' fixed identity; its stdout stripped (raises with stderr on failure)."""
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **_GIT_ENV}, capture_output=True,
                          text=True, timeout=GIT_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released): connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GitServer:
    """Bare repositories under root/repos served over smart HTTP on 127.0.0.1:<free port>."""

    def __init__(self, root: Path, *, username: str | None = None, password: str | None = None,
                 protocol_v2: bool = True, host: str = "127.0.0.1"):
        self.root = root
        self.repos = root / "repos"
        self.work = root / "work"
        self.repos.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.username = username
        self.password = password
        self.protocol_v2 = protocol_v2
        self.requests: list[str] = []  # "METHOD path user" per request, for tests that look at the traffic
        self.host = host
        """The address it listens on: loopback, or a test network's host address (containers reach it there)."""
        self._httpd = ThreadingHTTPServer((host, 0), _handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="git-http", daemon=True)

    def start(self) -> "GitServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "GitServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, repo: str) -> str:
        return f"http://{self.host}:{self.port}/{repo}.git"

    @property
    def credentials(self) -> dict[str, str]:
        """The login as the keys of a Git credentials Secret."""
        return {"username": self.username or "", "password": self.password or ""}

    def create(self, repo: str) -> Path:
        """An empty bare repository (branch main), and a clone of it to commit in."""
        bare = self.repos / f"{repo}.git"
        if not bare.exists():
            git("init", "-q", "--bare", "-b", "main", str(bare))
            git("config", "http.receivepack", "true", cwd=bare)
            clone = self.work / repo
            git("init", "-q", "-b", "main", str(clone))
            git("remote", "add", "origin", str(bare), cwd=clone)
        return bare

    def commit(self, repo: str, files: dict[str, str | None], message: str = "change", *,
               branch: str = "main", executable: tuple[str, ...] = ()) -> str:
        """Write `files` (path -> text; None deletes) on `branch`, commit and push; the new commit's sha.

        `executable` lists paths to mark executable (the exec bit is part of the tree)."""
        self.create(repo)
        clone = self.work / repo
        if git("branch", "--list", branch, cwd=clone):
            git("checkout", "-q", branch, cwd=clone)
        elif git("branch", "--list", cwd=clone):  # a new branch from the current commit
            git("checkout", "-q", "-b", branch, cwd=clone)
        else:  # no commit yet
            git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=clone)
        for name, text in files.items():
            target = clone / name
            if text is None:
                target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            target.chmod(0o755 if name in executable else 0o644)
        git("add", "-A", cwd=clone)
        git("-c", "commit.gpgsign=false", "commit", "-q", "--allow-empty", "-m", message, cwd=clone)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=clone)
        return git("rev-parse", "HEAD", cwd=clone)

    def tag(self, repo: str, name: str, commit: str, *, annotated: bool = False) -> None:
        """Tag `commit` (annotated: a tag object, which ls-remote lists with its peeled `^{}` line)."""
        clone = self.work / repo
        if annotated:
            git("-c", "tag.gpgsign=false", "tag", "-a", "-m", f"tag {name}", name, commit, cwd=clone)
        else:
            git("tag", name, commit, cwd=clone)
        git("push", "-q", "origin", f"refs/tags/{name}", cwd=clone)

    def branch(self, repo: str, name: str, commit: str) -> None:
        git("push", "-q", "origin", f"{commit}:refs/heads/{name}", cwd=self.work / repo)

    def remove(self, repo: str) -> None:
        shutil.rmtree(self.repos / f"{repo}.git", ignore_errors=True)
        shutil.rmtree(self.work / repo, ignore_errors=True)


def _handler(server: GitServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet: pytest shows failures
            pass

        def do_GET(self) -> None:
            self._cgi()

        def do_POST(self) -> None:
            self._cgi()

        def _user(self) -> str | None:
            """The Basic-auth user when the login matches; '' when no login is required; None when refused."""
            if server.username is None and server.password is None:
                return ""
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return None
            ok = secrets.compare_digest(user, server.username or "") and secrets.compare_digest(
                password, server.password or "")
            return user if ok else None

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # git's large pushes
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _cgi(self) -> None:
            user = self._user()
            path, _, query = self.path.partition("?")
            server.requests.append(f"{self.command} {path} {user if user is not None else '-'}")
            if user is None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(server.repos), "GIT_HTTP_EXPORT_ALL": "1",
                "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""), "REMOTE_ADDR": self.client_address[0],
                "REMOTE_USER": user, "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.0",
            }
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            if server.protocol_v2 and self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            body = self._body() if self.command == "POST" else b""
            env["CONTENT_LENGTH"] = str(len(body))
            done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                  timeout=GIT_TIMEOUT)
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = done.stdout.partition(b"\n\n")
            status, headers = 200, []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def git_server(tmp_path_factory) -> GitServer:
    """A Git server with Basic auth (user `flops`, a random password), stopped after the test."""
    with GitServer(tmp_path_factory.mktemp("git"), username="flops",
                   password=secrets.token_urlsafe(12)) as server:
        yield server


@pytest.fixture
def open_git_server(tmp_path_factory) -> GitServer:
    """A Git server without authentication."""
    with GitServer(tmp_path_factory.mktemp("git")) as server:
        yield server
