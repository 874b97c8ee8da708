"""A task's requirements installed as a layer on the running interpreter's packages, cached by content.

The packages the running interpreter already has (torch, flwr, mlflow… in the base images and the project's
venv) are never downloaded or installed again: pip runs for a throw-away `venv --without-pip` whose
site-packages has a .pth that appends the running interpreter's sys.path, so pip sees those packages as
installed, skips every requirement they satisfy, and writes only the missing ones into the venv. pip never
uninstalls outside the environment it installs into, so the base stays as it is even when a requirement asks
for another version of one of its packages (that version then lands in the layer and shadows the base's: a
log line says so).

What is kept is that site-packages alone (`Environment.site_packages`): put on PYTHONPATH locally, or, as the
image builder does, copied to /opt/flops/deps with PYTHONPATH=/opt/flops/task:/opt/flops/deps. Console
scripts (bin/), headers and data files outside site-packages are dropped: a task imports its dependencies, it
runs none of their commands. Bytecode is compiled with unchecked hashes (the files never change), so the tree
carries no timestamps.

Cache: cache_dir/<environment_key>/ {site-packages/ (absent when nothing was installed), requirements.txt,
environment.json}. Built in cache_dir/.build-<key>-*/ and renamed into place, under an fcntl lock per key, so a
failed or interrupted install leaves nothing and concurrent builds of one key install once.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flops_builder.errors import BuildError, redact

FIELD = "requirements.txt"
PIP_TIMEOUT = 1800.0  # a bound for a hung download; large wheels on a slow line take minutes
_KEY_VERSION = "flops-env-1"  # bump when the layout of a cached environment changes
_BASE_PTH = "_flops_base.pth"
_CONTINUATION = re.compile(r"\\\r?\n")
_COMMENT = re.compile(r"(^|\s+)#.*$")  # pip's own rule: a # after whitespace (a URL's #egg= stays)
_NOT_SELF_CONTAINED = re.compile(r"^(-r|--requirement|-c|--constraint|-e|--editable)(\s|=|$)|^(\.{1,2}|~)?/|^\.$"
                                 r"|^file:")


@dataclass(frozen=True)
class Environment:
    key: str
    site_packages: Path | None  # the installed packages' folder; None: nothing to add to the base
    cache_hit: bool


def normalize_requirements(text: str) -> str:
    """requirements.txt as its cache key sees it: continuation lines joined, comments and blank lines dropped,
    lines stripped, order kept. Refuses what the text alone does not pin down (other requirement or constraint
    files, editable installs, local paths): their content would not be part of the key."""
    lines = []
    for number, line in enumerate(_CONTINUATION.sub("", text).splitlines(), start=1):
        line = _COMMENT.sub("", line).strip()
        if not line:
            continue
        if _NOT_SELF_CONTAINED.search(line):
            raise BuildError("requirements", FIELD,
                             f"requirements.txt line {number} {line!r}: only packages from an index or a URL "
                             "are supported (no -r/-c/-e, no local paths); list the packages here")
        lines.append(line)
    return "\n".join(lines)


@functools.cache
def base_packages() -> dict[str, str]:
    """{normalized name: version} of every distribution on the running interpreter's sys.path (the first one
    found for a name, as import would)."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_canonical(name), dist.version)
    return found


@functools.cache
def base_identity() -> str:
    """"sha256:<hex>" of the running interpreter (sys.version, platform) and its installed distributions
    (sorted name==version): what the local environment cache is keyed on in place of a base image digest."""
    lines = [f"python {sys.version}", f"platform {sys.platform} {platform.machine()}"]
    lines += sorted(f"{name}=={version}" for name, version in base_packages().items())
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def environment_key(requirements: str, base: str) -> str:
    """32 hex digits naming the environment of `requirements` (normalized) on `base`; also a valid image tag."""
    text = f"{_KEY_VERSION}\0{base}\0{normalize_requirements(requirements)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def ensure_environment(requirements: str, cache_dir: Path, *, base: str | None = None,
                       log: Callable[[str], object] = print, timeout: float = PIP_TIMEOUT) -> Environment:
    """The environment of `requirements` layered on the running interpreter: from the cache, else installed.

    `base` names what the running interpreter has (default base_identity(); the image builder passes the base
    image's digest: it runs on the same Python environment as that image). A requirement pip cannot install
    raises BuildError(step="requirements", field="requirements.txt") with pip's reason; nothing is left behind."""
    wanted = normalize_requirements(requirements)
    key = environment_key(wanted, base_identity() if base is None else base)
    if not wanted:
        log(f"environment {key[:12]}: no requirements, nothing to install")
        return Environment(key, None, cache_hit=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / key
    if final.is_dir():
        return _hit(key, final, log)
    with _locked(cache_dir / f".{key}.lock", key, log):
        if final.is_dir():  # built by whoever held the lock
            return _hit(key, final, log)
        for stale in cache_dir.glob(f".build-{key}-*"):  # left by a killed build of this key
            shutil.rmtree(stale, ignore_errors=True)
        build = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_dir))
        try:
            _install(wanted, build, final, log, timeout)
            os.rename(build, final)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    site = final / "site-packages"
    return Environment(key, site if site.is_dir() else None, cache_hit=False)


def pip_failure(output: str) -> str:
    """The line of pip's output that says why it failed (its last ERROR line, past the boilerplate)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    meaningful = [e for e in errors if not e.startswith(("ResolutionImpossible", "Failed building wheel"))]
    reason = (meaningful or errors or [line for line in lines if not line.startswith(("[notice]", "WARNING:"))]
              or ["pip failed without a message"])[-1]
    if any(word in output for word in ("NewConnectionError", "Failed to establish a new connection",
                                       "Temporary failure in name resolution", "Max retries exceeded")):
        reason = f"{reason} (the package index was not reachable)"
    return redact(reason)


# --- internals ---------------------------------------------------------------------------------------------


def _install(wanted: str, build: Path, final: Path, log: Callable[[str], object], timeout: float) -> None:
    started = time.monotonic()
    count = len(wanted.splitlines())
    log(f"environment {final.name[:12]}: installing {count} requirement{'s' * (count != 1)} layered on the "
        f"running Python's packages")
    venv = build / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    probe = "import json, sys, sysconfig; print(json.dumps([sysconfig.get_path('purelib'), " \
            "sysconfig.get_path('platlib'), sys.path]))"
    purelib, platlib, own_path = json.loads(_run([str(python), "-c", probe], timeout=120))
    purelib, platlib = Path(purelib), Path(platlib)
    base_path = [p for p in sys.path if p and p not in own_path and os.path.isdir(p)]
    # Appended, so the venv's own site-packages (what pip installs) comes first, as on PYTHONPATH later.
    (purelib / _BASE_PTH).write_text(f"import sys; sys.path.extend(p for p in {base_path!r} if p not in sys.path)\n")
    (build / "requirements.txt").write_text(wanted + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-input", "--no-compile",
           "--disable-pip-version-check", "--no-warn-script-location", "--progress-bar", "off",
           "-r", str(build / "requirements.txt")]
    try:
        # Whatever pip is told elsewhere, it installs into the venv and nowhere else.
        env = {k: v for k, v in os.environ.items() if k not in ("PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_USER")}
        output = _run(pip, timeout=timeout, env=env)
    except _Failed as failed:
        for line in failed.output.strip().splitlines()[-15:]:  # the builder's log tail shows them on failure
            log(f"  pip: {redact(line)}")
        reason = f"pip did not finish within {timeout:.0f} s" if failed.timed_out else pip_failure(failed.output)
        raise BuildError("requirements", FIELD, f"requirements.txt could not be installed: {reason}") from None
    (purelib / _BASE_PTH).unlink()
    site = build / "site-packages"
    os.rename(purelib, site)
    if platlib != purelib and platlib.is_dir():  # a lib64 platform: one folder for both
        for entry in platlib.iterdir():
            os.rename(entry, site / entry.name)
    shutil.rmtree(venv)
    installed = _installed(site)
    if installed:
        # -s/-p: tracebacks name the final place; unchecked-hash: no timestamps, never re-checked.
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
                        "unchecked-hash", "-s", str(site), "-p", str(final / "site-packages"), str(site)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout, check=False)
    else:
        shutil.rmtree(site)
    satisfied = sorted({m.group(1) for m in re.finditer(r"^Requirement already satisfied: ([^\s<>=!~;\[]+)",
                                                          output, re.MULTILINE)})
    base = base_packages()
    shadowing = [f"{n} {v} (base: {base[_canonical(n)]})" for n, v in installed.items()
                 if _canonical(n) in base and base[_canonical(n)] != v]
    (build / "environment.json").write_text(json.dumps(
        {"key": final.name, "installed": installed, "alreadyInstalled": satisfied}, indent=2, sort_keys=True))
    what = ", ".join(f"{n}=={v}" for n, v in installed.items()) or "nothing"
    log(f"environment {final.name[:12]}: installed {what}; already installed: {', '.join(satisfied) or 'none'} "
        f"({time.monotonic() - started:.1f}s)")
    if shadowing:
        log(f"environment {final.name[:12]}: note: requirements.txt replaces the running Python's "
            f"{', '.join(shadowing)}")


def _hit(key: str, final: Path, log: Callable[[str], object]) -> Environment:
    site = final / "site-packages"
    log(f"environment {key[:12]}: cache hit ({final})")
    return Environment(key, site if site.is_dir() else None, cache_hit=True)


def _installed(site: Path) -> dict[str, str]:
    """{name: version} of the distributions pip wrote into `site`."""
    found = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        if dist.metadata["Name"]:
            found[dist.metadata["Name"]] = dist.version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@contextmanager
def _locked(path: Path, key: str, log: Callable[[str], object]) -> Iterator[None]:
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"environment {key[:12]}: another process is building it; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _Failed(RuntimeError):
    def __init__(self, command: list[str], output: str, timed_out: bool):
        tail = " | ".join(output.strip().splitlines()[-3:])
        super().__init__(f"{' '.join(command[:4])}… {'timed out' if timed_out else 'failed'}: {redact(tail)}")
        self.output = output
        self.timed_out = timed_out


def _run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> str:
    """stdout and stderr together; _Failed on a non-zero exit or timeout (the whole process group killed)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               text=True, errors="replace", env=env, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        output, _ = process.communicate()
        raise _Failed(command, output, timed_out=True) from None
    if process.returncode != 0:
        raise _Failed(command, output, timed_out=False)
    return output
