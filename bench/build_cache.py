"""What the image builder's caches save: a cold build, a code-only change and an unchanged source, timed.

    .venv/bin/python bench/build_cache.py [--repeats 3] [--bases real|synthetic] [--bases-registry same|other]
                                          [--requirement pyjokes==0.8.3]

The wine example (manifests/examples/tasks/wine) with a requirements.txt holding one real PyPI package the
bases lack (so the dependency layer is real: pip downloads and installs it), served by a Git server on loopback
(tests/gitserver.py, Basic auth), built by `flops-builder` (a process with the environment the operator renders)
and pushed to a registry started here (CNCF distribution, htpasswd, loopback).

Per repetition, each build in a fresh work directory, as each build on Oakestra is a fresh container:
  cold       an empty target repository (team/wine-<n>) and no dependency cache anywhere
  code-only  one line of the task's code changed (a new commit): the dependency layer comes from the registry
  unchanged  the same commit again: a registry lookup
Times are the builder process's wall time, start to exit (Python's start included). Ratios are to the same
repetition's cold build.
Bases: `real` = the learner and aggregator images `make images` built, pushed into the registry first (once,
then cached: tests/registry.py); `synthetic` = two-layer stand-ins (no podman needed).
--bases-registry same (default, as `make push` + FLOPS_OAKESTRA_IMAGE_REGISTRY set it up): the bases sit in the
target's registry, their layers are mounted (no bytes travel), and a cold build costs installing the requirement,
fetching and the import check. other: the bases come from a second registry (say ghcr.io, the team's registry the
target), so a cold build also copies the bases' layers (gigabytes for the real ones) into the target registry.
Targets: code-only <= 15 % of cold and <= 60 s; unchanged <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flops_builder.contract import Bases, BuilderEnv, BuildSpec, SourceSpec  # noqa: E402
from flops_builder.results import parse  # noqa: E402
from tests.gitserver import GitServer  # noqa: E402
from tests.registry import bases_storage, push_synthetic_base, start_registry  # noqa: E402

WINE = ROOT / "manifests" / "examples" / "tasks" / "wine"
BUILDER = Path(sys.executable).with_name("flops-builder")
KINDS = ("cold", "code-only", "unchanged")
TARGETS = {"code-only": (0.15, 60.0), "unchanged": (None, 2.0)}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build(registry, git: GitServer, commit: str, bases: tuple[str, str], target: str, workdir: Path) -> dict:
    env = BuilderEnv(build=BuildSpec(source=SourceSpec(url=git.url("wine"), commit=commit, path="tasks/wine"),
                                     bases=Bases(learner=bases[0], aggregator=bases[1]), target=target,
                                     tls_verify=False),
                     workdir=str(workdir), git_username=git.username, git_password=git.password,
                     registry_username=registry.username, registry_password=registry.password)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOPS_")}
    # A builder on Oakestra is a fresh container: pip has no download cache there either.
    clean["PIP_CACHE_DIR"] = str(workdir / "pip-cache")
    started = time.monotonic()
    done = subprocess.run([str(BUILDER)], env={**clean, **env.to_env()}, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - started
    result = parse(done.stdout)
    if done.returncode != 0 or not result or not result["ok"]:
        raise SystemExit(f"build failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    steps: dict[str, float] = {}
    last = ("", 0.0)
    for line in done.stdout.splitlines():
        if line.startswith("flops-build: step="):
            step = line.split()[1].removeprefix("step=")
            seconds = float(line.rsplit("(", 1)[1].rstrip("s)"))  # since the step began
            # Lines of one step carry its running time; a step begun again (push, per image) starts from 0.
            same = step == last[0] and seconds >= last[1]
            steps[step] = steps.get(step, 0.0) + (seconds - last[1] if same else seconds)
            last = (step, seconds)
    return {"wall": wall, "cache": result["cache"], "steps": steps}


def real_bases(registry_dir: Path):
    from flops_operator.plan import images

    local = {f"flops/{name}": images.image(name) for name in ("learner", "aggregator")}
    storage, seconds = bases_storage(local, registry_dir)
    print(f"real bases ({', '.join(local.values())}) into the registry: {seconds:.1f}s (a cached push is a copy)")
    return storage, tuple(f"flops/{name}:{images.IMAGE_VERSION}" for name in ("learner", "aggregator"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bases", choices=("real", "synthetic"), default="real")
    parser.add_argument("--bases-registry", choices=("same", "other"), default="same")
    parser.add_argument("--requirement", default="pyjokes==0.8.3",
                        help="the task's requirements.txt line (a package the bases lack)")
    args = parser.parse_args()
    print(f"load average at start: {load()}")
    with tempfile.TemporaryDirectory(prefix="flops-bench-build-") as tmp:
        tmp_path = Path(tmp)
        storage, names = real_bases(tmp_path / "bases") if args.bases == "real" else (None, None)
        registry = start_registry(tmp_path / "registry", auth=("flops", secrets.token_urlsafe(12)),
                                  storage=storage if args.bases_registry == "same" else None)
        elsewhere = start_registry(tmp_path / "elsewhere", storage=storage) if args.bases_registry == "other" else None
        try:
            holder = elsewhere or registry
            if names:
                bases = tuple(f"{holder.host}/{name}" for name in names)
            else:
                bases = (push_synthetic_base(holder, "flops/learner", workdir=tmp_path, oci_index=True),
                         push_synthetic_base(holder, "flops/aggregator", workdir=tmp_path))
            print(f"bases: {args.bases}, in {'the target' if holder is registry else 'another'} registry "
                  f"({bases[0]}, {bases[1]}); requirement: {args.requirement}; "
                  f"builder: {BUILDER} on this machine's Python, a fresh work directory per build")
            with GitServer(tmp_path / "git", username="flops", password=secrets.token_urlsafe(12)) as git:
                runs = []
                for n in range(args.repeats):
                    if elsewhere and n:  # cold again: a target registry that holds none of the bases' layers
                        registry.stop()
                        registry = start_registry(tmp_path / f"registry-{n}", auth=registry.login)
                    runs.append(run_once(n, registry, git, bases, args.requirement, tmp_path))
        finally:
            registry.stop()
            if elsewhere:
                elsewhere.stop()
    report(runs)
    print(f"load average at end: {load()}")


def run_once(n: int, registry, git: GitServer, bases, requirement: str, tmp_path: Path) -> dict:
    files = {f"tasks/wine/{p.name}": p.read_text() for p in WINE.iterdir() if p.is_file()}
    files["tasks/wine/requirements.txt"] = f"{requirement}\n"
    first = git.commit("wine", files, f"run {n}: cold")
    files["tasks/wine/wine_task.py"] += f"\nBENCH_RUN = {n}  # one line of code changed\n"
    second = git.commit("wine", files, f"run {n}: code only")
    target = f"{registry.host}/team/wine-{n}"  # an empty repository: nothing of earlier runs to hit
    figures = {}
    for kind, commit in zip(KINDS, (first, second, second)):
        figures[kind] = build(registry, git, commit, bases, target, tmp_path / f"work-{n}-{kind}")
        f = figures[kind]
        steps = ", ".join(f"{step} {seconds:.1f}" for step, seconds in f["steps"].items())
        print(f"run {n + 1} {kind:>9}: {f['wall']:6.1f} s  cache {f['cache']}  steps (s): {steps}", flush=True)
    return figures


def report(runs: list[dict]) -> None:
    print("\n           " + "".join(f"{'run ' + str(i + 1):>10}" for i in range(len(runs))) + "    median")
    for kind in KINDS:
        walls = [run[kind]["wall"] for run in runs]
        print(f"{kind:>9} s " + "".join(f"{w:10.1f}" for w in walls) + f"{statistics.median(walls):10.1f}")
    for kind in ("code-only", "unchanged"):
        ratios = [run[kind]["wall"] / run["cold"]["wall"] for run in runs]
        print(f"{kind:>9}/cold " + "".join(f"{r:9.0%}" for r in ratios) + f"{statistics.median(ratios):10.0%}")
    for kind, (ratio, seconds) in TARGETS.items():
        walls = [run[kind]["wall"] for run in runs]
        ratios = [run[kind]["wall"] / run["cold"]["wall"] for run in runs]
        met = max(walls) <= seconds and (ratio is None or max(ratios) <= ratio)
        goal = f"<= {ratio:.0%} of cold and " if ratio else ""
        print(f"target {kind}: {goal}<= {seconds:g} s: {'met' if met else 'NOT met'} "
              f"(worst {max(walls):.1f} s, {max(ratios):.0%} of cold)")


if __name__ == "__main__":
    main()
