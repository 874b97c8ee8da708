"""The builder on one machine (`flops run`, platform local): no image, the same steps otherwise.

The source (a local folder, or a Git commit fetched into the cache) goes on the training services' path as it is,
and its requirements into a cached environment layered on this interpreter's packages (environment.py), keyed by
the requirements and the installed packages: a code-only change builds nothing. Reads FLOPS_BUILD as the plan
renders it for platform local (operator/flops_operator/plan/builder.py) and prints the same progress, result and
error lines as the image builder (results.py), which the operator reads from its output.

    FLOPS_BUILD      {"source": {"local": FOLDER, "tree"} | {"url", "commit", "path"}, "entrypoint": str | null}
    FLOPS_GIT_*      the repository's login (USERNAME, PASSWORD, SSH_KEY, KNOWN_HOSTS), each optional
    FLOPS_CACHE_DIR  where sources and environments are cached (default ~/.flops/cache)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import BuildError
from .results import RESULT, error_line

CHECK_TIMEOUT_SECONDS = 300


def cache_dir() -> Path:
    return Path(os.environ.get("FLOPS_CACHE_DIR") or Path.home() / ".flops" / "cache")


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, step: str, text: str) -> None:
        print(f"flops-build: step={step} {text} ({time.monotonic() - self.started:.1f}s)", flush=True)


def _git_credentials():
    from .source import GitCredentials

    values = {key: os.environ.get(f"FLOPS_GIT_{env}", "") for key, env in (
        ("username", "USERNAME"), ("password", "PASSWORD"), ("ssh-privatekey", "SSH_KEY"), ("known_hosts", "KNOWN_HOSTS"))}
    return GitCredentials.from_secret(values) if any(values.values()) else None


def fetch_source(source: dict, cache: Path, progress: Progress) -> tuple[Path, dict]:
    """The task's folder, and what to report of its version."""
    from .source import GitSource, fetch, tree_digest

    if "local" in source:
        folder = Path(source["local"])
        if not folder.is_dir():
            raise BuildError("fetch", "spec.task.source.local", f"{folder} is not a folder on this machine")
        progress("fetch", f"using the folder {folder}")
        # The operator took its digest when the training started: that is the version this training is of.
        return folder, {"tree": source.get("tree") or tree_digest(folder)}
    url, commit, path = source["url"], source["commit"], source.get("path") or ""
    where = cache / "sources" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{commit}"
    if where.is_dir():
        progress("fetch", f"{commit[:12]}: cache hit")
    else:
        progress("fetch", f"fetching {commit[:12]}")
        where.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=where.parent))
        try:
            fetch(GitSource(url=url, ref=commit, path="", credentials=_git_credentials()), commit, scratch)
            shutil.rmtree(scratch / ".git", ignore_errors=True)
            scratch.rename(where)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    folder = where / path if path else where
    if not folder.is_dir():
        raise BuildError("path", "spec.task.source.git.path", f"{path!r} is not a folder at commit {commit[:12]}")
    return folder, {"commit": commit, "tree": tree_digest(folder)}


def check(folder: Path, entrypoint: str, python_path: list[str], progress: Progress) -> None:
    """Import the task with its dependencies, as the training services will, check the contract and train two
    simulated learners for one round (flops_learner.check): a task that cannot train fails here, in seconds."""
    progress("check", f"{entrypoint}: 2 simulated learners, 1 round")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*python_path, os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    done = subprocess.run([sys.executable, "-m", "flops_learner.check", str(folder), "--entrypoint", entrypoint],
                          env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT_SECONDS)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise BuildError("check", "spec.task.entrypoint",
                         f"the task {entrypoint} does not train: " + " | ".join(lines[-3:])[-600:])


def build(request: dict) -> dict:
    from .environment import ensure_environment
    from .source import default_entrypoint, requirements_text

    progress, cache = Progress(), cache_dir()
    folder, version = fetch_source(request["source"], cache, progress)
    entrypoint = request.get("entrypoint") or default_entrypoint(folder)
    if not entrypoint:
        raise BuildError("entrypoint", "spec.task.entrypoint",
                         "no task.entrypoint in the spec and no [tool.flops] task in the source's pyproject.toml")
    progress("deps", "requirements.txt" if (folder / "requirements.txt").exists() else "no requirements.txt")
    environment = ensure_environment(requirements_text(folder), cache / "envs",
                                     log=lambda text: progress("deps", text))
    progress("deps", f"environment {environment.key[:12]}: {'cache hit' if environment.cache_hit else 'built'}")
    python_path = [str(folder.resolve())] + ([str(environment.site_packages)] if environment.site_packages else [])
    check(folder, entrypoint, python_path, progress)
    return {**version, "entrypoint": entrypoint, "environment": environment.key, "pythonPath": python_path,
            "cache": {"deps": "hit" if environment.cache_hit else "built", "code": "in place"},
            "seconds": round(time.monotonic() - progress.started, 2)}


def main() -> None:
    try:
        request = json.loads(os.environ["FLOPS_BUILD"])
        result = build(request)
    except BuildError as exc:
        print(error_line(exc.step, exc.field, exc.message), flush=True)
        sys.exit(1)
    except subprocess.TimeoutExpired as exc:
        print(error_line("check", "spec.task.entrypoint", f"importing the task took over {exc.timeout} s"), flush=True)
        sys.exit(1)
    print(f"{RESULT} {json.dumps(result, separators=(',', ':'))}", flush=True)


if __name__ == "__main__":
    main()
