"""`flops-builder`: a task's source to learner and aggregator images, pushed to a registry, cached by content.

Reads BuilderEnv (flops_builder.contract) from the environment and runs these steps, each reporting one line
`flops-build: step=<name> <what> (<seconds>s)`:

  fetch   the source commit's folder (git, shallow)
  source  its tree digest, requirements.txt and entrypoint (the spec's, else pyproject.toml [tool.flops] task)
  bases   the learner and aggregator base images' manifests (this machine's platform from a list)
  lookup  tag = hash(format, tree, entrypoint, base digests): if <target>/learner:<tag> and
          <target>/aggregator:<tag> exist, the build is done (a registry lookup, nothing fetched or pushed)
  deps    the dependency layer, keyed by requirements.txt and the learner base's digest: kept in the registry
          as <target>/deps:<key> (cache hit: reused as it is), else installed (flops_builder.environment, layered
          on this interpreter's packages = the bases') into a deterministic layer at /opt/flops/deps
  check   `python -m flops_learner.check <folder> --import-only` with the dependencies on PYTHONPATH
  code    the source folder as a deterministic layer at /opt/flops/task
  push    per image: the base's manifest + those two layers, PYTHONPATH=/opt/flops/task:/opt/flops/deps,
          labels io.flops.source.{url,commit,path,tree} and io.flops.task.entrypoint, pushed as :<tag>

Last line on stdout: `FLOPS-BUILD-RESULT {...}` (exit 0) or `FLOPS-BUILD-ERROR {"step","field","message"}`
(exit 1; exit 2 when the environment itself is not valid). Registry calls are retried on transient failures
(flops_builder.registry); a refused login or push fails at once.

The check imports the task's code in this container, as this user: it runs without the build's credentials
in its environment, but code run as the same user could still read them from the builder's process. Build
only sources you would train.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Mapping, TextIO

from .contract import ENV_BUILD, BuilderEnv
from .environment import ensure_environment, environment_key, normalize_requirements
from .errors import BuildError, redact
from .images import (Base, NewLayer, Transfers, env_value, image_tag, push_image, push_layer_image, python_path,
                     read_base, read_layer_image)
from .layers import extract_layer, keep_bytecode, write_layer
from .registry import Client, Reference
from .results import error_line, result_line
from .source import GitCredentials, GitSource, default_entrypoint, fetch, requirements_text, tree_digest

ENTRYPOINT_FIELD = "spec.task.entrypoint"
CHECK_TIMEOUT = 600.0
# What a step's unexpected failure is reported as (BuildError's steps).
_ERROR_STEP = {"fetch": "fetch", "source": "path", "bases": "registry", "lookup": "registry",
               "deps": "requirements", "check": "check", "code": "push", "push": "push"}


class Progress:
    """The step lines, each with the seconds its step has taken so far."""

    def __init__(self, out: TextIO):
        self.out = out
        self.step = "fetch"
        self.started = time.monotonic()

    def begin(self, step: str) -> None:
        self.step, self.started = step, time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"flops-build: step={self.step} {what} ({time.monotonic() - self.started:.1f}s)", file=self.out,
              flush=True)


class Build:
    def __init__(self, env: BuilderEnv, progress: Progress):
        self.env, self.spec, self.progress = env, env.build, progress
        self.workdir = Path(env.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="build-", dir=self.workdir))
        self.host, _, self.prefix = self.spec.target.partition("/")
        self.clients: dict[str, Client] = {}
        self.transfers = Transfers()

    def client(self, host: str) -> Client:
        """The target registry with the build's login; any other (bases elsewhere) without one. tlsVerify holds
        for every registry of the build: the images' content is only as safe as the least checked of them."""
        if host not in self.clients:
            login = (self.env.registry_username, self.env.registry_password) if host == self.host else (None, None)
            self.clients[host] = Client(host, username=login[0], password=login[1], tls_verify=self.spec.tls_verify,
                                        ca_bundle=self._ca_bundle())
        return self.clients[host]

    def _ca_bundle(self) -> str | None:
        if not self.env.registry_ca:
            return None
        bundle = self.workdir / "registry-ca.pem"
        if not bundle.exists():
            import certifi  # requests' own bundle: the public CAs stay trusted

            from flops_runtime.pki import pem
            bundle.write_text(Path(certifi.where()).read_text() + "\n" + pem(self.env.registry_ca))
        return str(bundle)

    def repo(self, name: str):
        return self.client(self.host).repository(f"{self.prefix}/{name}")

    def ref(self, name: str, tag: str, digest: str) -> str:
        return f"{self.host}/{self.prefix}/{name}:{tag}@{digest}"

    # -- steps ------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        started = time.monotonic()
        try:
            return self._run(started)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _run(self, started: float) -> dict:
        source = self.spec.source
        self.progress.begin("fetch")
        credentials = GitCredentials(username=self.env.git_username, password=self.env.git_password,
                                     ssh_key=self.env.git_ssh_key, known_hosts=self.env.git_known_hosts)
        has_login = any((credentials.username, credentials.password, credentials.ssh_key))
        folder = fetch(GitSource(source.url, source.commit, source.path, credentials if has_login else None),
                       source.commit, self.scratch / "source")
        self.progress(f"{source.url} at {source.commit[:12]}, path {source.path or '.'}")

        self.progress.begin("source")
        tree = tree_digest(folder)
        requirements = normalize_requirements(requirements_text(folder))
        entrypoint = self.spec.entrypoint or default_entrypoint(folder)
        if not entrypoint:
            raise BuildError("entrypoint", ENTRYPOINT_FIELD, "no entrypoint: set spec.task.entrypoint "
                             '(module:attribute) or [tool.flops] task = "module:attribute" in the source\'s '
                             "pyproject.toml")
        count = len(requirements.splitlines())
        self.progress(f"tree {tree[7:19]}, entrypoint {entrypoint}, {count} requirement{'s' * (count != 1)}")

        self.progress.begin("bases")
        bases = {role: self._base(getattr(self.spec.bases, role)) for role in ("learner", "aggregator")}
        self.progress(", ".join(f"{role} {b.reference} = {b.digest[:19]}" for role, b in bases.items()))

        self.progress.begin("lookup")
        tag = image_tag(tree, entrypoint, [bases["learner"].digest, bases["aggregator"].digest])
        found = {role: self.repo(role).manifest_digest(tag) for role in bases}
        if all(found.values()):
            self.progress(f"cache hit: {self.host}/{self.prefix}/{{learner,aggregator}}:{tag} exist")
            return self._result(entrypoint, tag, found, {"images": "hit", "deps": "hit" if requirements else "none",
                                                         "code": "hit"}, started)
        self.progress(f"cache miss: building {tag}")

        self.progress.begin("deps")
        deps, deps_dir, deps_cache = self._deps(requirements, bases["learner"].digest)

        self.progress.begin("check")
        self._check(folder, entrypoint, deps_dir)

        self.progress.begin("code")
        code = write_layer(folder, "opt/flops/task", self.scratch / "code.tar.gz")
        code_cache = "hit" if self.repo("learner").has_blob(code.digest) else "built"
        self.progress(f"{'cache hit' if code_cache == 'hit' else 'built'}: layer {code.digest[7:19]} "
                      f"({code.size / 1e3:.1f} kB)")
        layers = ([deps] if deps else []) + [NewLayer(code.digest, code.diff_id, code.size,
                                                      f"flops-builder: task source {tree}", file=code.path)]
        labels = {"io.flops.source.url": source.url, "io.flops.source.commit": source.commit,
                  "io.flops.source.path": source.path, "io.flops.source.tree": tree,
                  "io.flops.task.entrypoint": entrypoint}
        digests = {}
        for role, base in bases.items():
            self.progress.begin("push")
            before = replace(self.transfers)
            env = {"PYTHONPATH": python_path(deps is not None, env_value(base.config, "PYTHONPATH"))}
            digests[role] = push_image(self.repo(role), tag, base, layers, env, labels, self.transfers)
            self.progress(f"{role} {self.ref(role, tag, digests[role])}; {self.transfers.since(before).summary()}")
            # The next image mounts this one's new layers instead of uploading them again.
            layers = [replace(layer, source=self.repo(role)) for layer in layers]
        return self._result(entrypoint, tag, digests, {"images": "built", "deps": deps_cache, "code": code_cache},
                            started)

    def _base(self, text: str) -> Base:
        return read_base(self.client(Reference.parse(text).host), text)

    def _deps(self, requirements: str, base_digest: str) -> tuple[NewLayer | None, Path | None, str]:
        """The dependency layer (None: no requirements), a folder holding its packages for the check, and
        whether it was a cache hit."""
        if not requirements:
            self.progress("none: requirements.txt is empty or absent")
            return None, None, "none"
        key = environment_key(requirements, base_digest)
        repo = self.repo("deps")
        cached = read_layer_image(repo, key)
        if cached is not None:
            unpacked = self.workdir / "deps" / key
            if not unpacked.is_dir():  # a fresh builder: the packages only for the check, from the registry
                unpacked.parent.mkdir(exist_ok=True)

                def unpack() -> None:
                    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=unpacked.parent))
                    try:
                        extract_layer(repo.blob_chunks(cached.digest), staging)
                        os.rename(staging, unpacked)
                    except BaseException:
                        shutil.rmtree(staging, ignore_errors=True)
                        raise
                repo.client.retrying("registry", f"reading deps:{key} in {repo.name}", unpack)
            self.progress(f"cache hit: {self.host}/{self.prefix}/deps:{key} (layer {cached.digest[7:19]}, "
                          f"{cached.size / 1e6:.1f} MB)")
            return cached, unpacked / "opt" / "flops" / "deps", "hit"
        environment = ensure_environment(requirements, self.workdir / "environments", log=self.progress)
        layer = write_layer(environment.site_packages, "opt/flops/deps", self.scratch / "deps.tar.gz",
                            skip=keep_bytecode)
        new = NewLayer(layer.digest, layer.diff_id, layer.size, f"flops-builder: requirements.txt {key}",
                       file=layer.path)
        push_layer_image(repo, key, new, {"io.flops.deps.key": key}, self.transfers)
        self.progress(f"built: layer {layer.digest[7:19]} ({layer.size / 1e6:.1f} MB), kept as "
                      f"{self.host}/{self.prefix}/deps:{key}")
        return replace(new, source=repo), environment.site_packages, "built"

    def _check(self, folder: Path, entrypoint: str, deps_dir: Path | None) -> None:
        # The task's code runs here: without the build's secrets in its environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_GIT_", "FLOPS_REGISTRY_"))}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(deps_dir) if deps_dir else "",
                                                        os.environ.get("PYTHONPATH", "")) if p)
        command = [sys.executable, "-m", "flops_learner.check", str(folder), "--entrypoint", entrypoint,
                   "--import-only"]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT,
                                  cwd=self.scratch, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BuildError("check", ENTRYPOINT_FIELD, f"importing {entrypoint} took over {CHECK_TIMEOUT:.0f}s")
        if done.returncode != 0:
            problems = [line.strip() for line in done.stdout.splitlines() if line.strip()]
            if not problems:  # it crashed rather than reported: its last words
                problems = [line.strip() for line in done.stderr.splitlines() if line.strip()][-3:]
            for line in (done.stdout + done.stderr).strip().splitlines()[-20:]:
                self.progress(f"  {line}")
            raise BuildError("check", ENTRYPOINT_FIELD, "; ".join(problems) or f"the check failed ({done.returncode})")
        self.progress(f"{entrypoint}: import and contract ok")

    def _result(self, entrypoint: str, tag: str, digests: dict[str, str], cache: dict[str, str],
                started: float) -> dict:
        return {"commit": self.spec.source.commit, "entrypoint": entrypoint,
                "learner": self.ref("learner", tag, digests["learner"]),
                "aggregator": self.ref("aggregator", tag, digests["aggregator"]),
                "cache": cache, "seconds": time.monotonic() - started}


def run(environ: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    """One build; the exit code."""
    try:
        env = BuilderEnv.from_env(environ)
    except ValueError as exc:
        print(error_line("resolve", ENV_BUILD, f"the builder's environment is not valid: {exc}"), file=out,
              flush=True)
        return 2
    secrets = (env.git_password, env.git_ssh_key, env.git_known_hosts, env.registry_password)
    progress = Progress(out)
    try:
        result = Build(env, progress).run()
    except BuildError as error:
        print(error_line(error.step, error.field, redact(error.message, secrets)), file=out, flush=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen failure: still one line the operator reads
        print(redact(traceback.format_exc(), secrets), file=sys.stderr, flush=True)
        message = redact(f"{type(exc).__name__}: {exc}", secrets)
        print(error_line(_ERROR_STEP.get(progress.step, "push"), None, f"builder failed: {message}"), file=out,
              flush=True)
        return 1
    print(result_line(**result), file=out, flush=True)
    return 0


def main() -> None:
    sys.exit(run(os.environ))


if __name__ == "__main__":
    main()
