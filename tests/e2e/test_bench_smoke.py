"""Every script in bench/ runs here at a tiny size, as a user runs it (a subprocess of this venv's Python): it must
end with exit code 0 and print its figures, each line checked for its shape and numbers. A benchmark that rots (an
import moved, a credential the plan now renders differently) fails here instead of the next time someone measures.

The figures of a smoke run mean nothing (one round, two projects): only that they are printed. A new script in
bench/ needs its entry in SMOKES (test_every_bench_script_has_a_smoke_entry fails until it has one).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from flops_runtime.proc import stop_tree

BENCH = Path(__file__).resolve().parents[2] / "bench"
# Modules the scripts import: no figures of their own, never run as a script.
HELPERS = {"loopback.py"}
SECONDS = 840  # a bound for hangs (2 shared cores may be busy); pytest's own timeout is above it

NUMBER = r"-?\d+\.\d+"


def package_index() -> str | None:
    """Why the package index is out of reach, or None (as tests/e2e/test_builder_images.py skips)."""
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError as error:
        return f"the package index is not reachable from here: {error}"
    return None


@dataclass(frozen=True)
class Smoke:
    args: tuple[str, ...]
    """The smallest run the script accepts."""
    figures: tuple[str, ...]
    """Regular expressions, each matching one whole line of its output."""
    unusable: Callable[[], str | None] | None = None
    """Why it cannot run here (a skip), or None."""


def rows(*names: str, pattern: str) -> tuple[str, ...]:
    return tuple(pattern.format(name=name) for name in names)


SMOKES: dict[str, Smoke] = {
    "oakestra_scale.py": Smoke(("--projects", "2", "--resyncs", "1", "--latency", "0.002"), (
        r"Oakestra scale benchmark: 2 projects x 7 services .*; load average \d+\.\d\d on \d+ CPUs",
        r"  time until every service is requested: \d+\.\d\d s",
        r"  driver CPU meanwhile: \d+\.\d\d s = \d+\.\d\d ms per call \(emulator, in its own process: \d+\.\d\d s\)",
        r"  calls per project: \d+\.\d \(reads \d+\.\d, writes \d+\.\d; \d+ logins in total\); "
        r"reconcile rounds per project \d+\.\d",
        r"  every project has its 7 services: True; duplicate service writes: 0; extra instance requests: 0",
        r"  steady-state resync 1: \d+\.\d\d reads per project, \d+ writes, \d+ auth calls, \d+ actions, 2/2 Ready",
        r"  driver process peak RSS: \d+ MB",
        # The sequential baseline (it crashed on the Flower CA once the plan rendered it from a real bundle).
        r"  calls per project: \d+\.\d \(writes \d+\.\d, \d+ logins\); services silently not created "
        r"\(rr_ip collision, failed_services unchecked\): \d+",
        r"speed-up over the baseline: \d+\.\dx \(target >= 10x: (met|NOT met)\)",
        r"steady state: \d+\.\d\d reads per project per resync \(target <= 2: (met|NOT met)\), \d+ writes per "
        r"resync \(target 0: (met|NOT met)\)",
        r"load average at the end: \d+\.\d\d",
    )),
    "flower_security.py": Smoke(("--repeats", "1", "--rounds", "1", "--learners", "1"), (
        r"digits-mlp, 1 learners x 1 rounds, .*; 1 run\(s\) each, ABBA order; load average at start .*",
        *rows("insecure", "secure", pattern=r"{name} +\d+\.\d +\d+\.\d{{3}} +\d+\.\d{{3}}  \d\.\d{{3}}"),
        r"mean round: insecure \d+\.\d{3} s, secure \d+\.\d{3} s; ratio \d+\.\d{3} \(target <= 1\.05\)",
        r"median round ratio \d+\.\d{3}; whole-run ratio \(start-up included\) \d+\.\d{3}",
        r"final accuracy: insecure \d\.\d{3}, secure \d\.\d{3}",
    )),
    "mlflow_overhead.py": Smoke(("--repeats", "1", "--rounds", "1", "--learners", "1"), (
        r"digits-mlp, 1 learners x 1 rounds, .*; 1 run\(s\) each, ABBA order; load average .*",
        *rows("bare", "mlflow", pattern=r"{name} +\d+\.\d +\d+\.\d +\d+\.\d +\d+\.\d +\d\.\d{{3}}"),
        r"mean wall per round: bare \d+\.\d s, mlflow \d+\.\d s",
        r"overhead ratio \(whole aggregator run, incl\. model logging \+ registration\): \d+\.\d{3} "
        r"\(target <= 1\.10\)",
        r"overhead ratio \(sum of round durations only\): \d+\.\d{3}",
        r"whole-run ratio of each pair \(adjacent runs\): \d+\.\d{3}; median \d+\.\d{3}",
        r"MLflow's phases, mean s .*: \w+ \d+\.\d\d(, \w+ \d+\.\d\d)*",
        r"final accuracy with MLflow: \d\.\d{3} \(target >= 0\.90\)",
    )),
    "round_overhead.py": Smoke(
        # Without the demo (its "before" run alone takes over a minute; demo_timing.py runs the same demo here).
        ("--repeats", "1", "--rounds", "1", "--learners", "1", "--idle-seconds", "1", "--idle-after", "0",
         "--no-demo"), (
            r"digits-mlp, 1 learners x 3 local epochs, 1 rounds, FedAvg; .*",
            # One row per (mode, run, round): wall, work, overhead, then the phases.
            *rows("before", "after", pattern=rf"{{name}} +1 +1( +{NUMBER}){{{{3}}}}  ( +{NUMBER}){{{{8}}}}"),
            *rows("before", "after", pattern=rf"{{name}} +median of rounds: configure {NUMBER} .* "
                                             rf"bookkeeping {NUMBER}"),
            *rows("before", "after", pattern=r"{name} +aggregator wall s: \d+\.\d; best eval_accuracy: \d\.\d{{3}}"),
            rf"median round overhead: before {NUMBER} s, after {NUMBER} s, {NUMBER}x lower .*",
            *(rf"learner CPU, {state} +\({mode}\): its process tree +\d+\.\d %, its SuperLink's +\d+\.\d % "
              r"of one core; load average .*" for state in ("waiting", "idle") for mode in ("before", "after")),
            *rows("before", "after", pattern=r"learner memory \({name}\): \d+ MB PSS, .*"),
        )),
    "demo_timing.py": Smoke(("--rounds", "1", "--learners", "1"), (
        r"digits-local\.yaml: 1 learners x 1 rounds, backend sqlite, artifacts ftp",
        r"phase: Completed .*",
        *rows("stack start-up", "training start", "training", "model logging", "teardown", "total",
              pattern=r" *{name}: +\d+\.\ds"),
        r"rounds 1/1; best .*",
        r"model digits-mlp version \d+ @champion",
    )),
    "gitops_latency.py": Smoke(("--pairs", "1", "--rounds", "1", "--learners", "1"), (
        r"default/digits: 1 learners x 1 rounds, 1 pair\(s\) in ABBA order",
        *rows("flops run", "operator", pattern=r"  {name} +Training +\d+\.\ds  Completed +\d+\.\ds"),
        r"mean +to Training +to Completed",
        r"flops run +\d+\.\ds +\d+\.\ds",
        r"operator +\d+\.\ds +\d+\.\ds +\([+-]\d+%, [+-]\d+% against flops run; target within \+15 %\)",
        r"load average \d+\.\d\d \d+\.\d\d \d+\.\d\d",
    )),
    # The kopf operator in its own process over kmock + the Oakestra emulator; a 2 s resync so that 5 s of idling
    # has looks to count.
    "operator_scale.py": Smoke(("--projects", "5", "--repeats", "1", "--idle-seconds", "5", "--resync-seconds", "2"), (
        r"Operator scale benchmark: kopf operator in its own process over kmock \+ Oakestra emulator; resync 2 s, "
        r"idle window 5 s, 1 run\(s\) per size; load average \d+\.\d\d on \d+ CPUs",
        r"5 projects, run 1: apply->Training \d+\.\d s \(created in \d+\.\d s\); idle \d+ s: kubernetes \d+\.\d\d req/s "
        r"\(.*\), oakestra \d+\.\d\d req/s \(\d+ reads, \d+ other\) = \d+\.\d\d reads per project resync "
        r"\(\d+ resyncs, \d+ observes\); "
        r"CPU \d+\.\d % of a core; RSS \d+ MB; load average \d+\.\d\d",
        r"5 projects, mean \[min-max\] of 1 run\(s\): kubernetes \d+\.\d\d \[.*\] req/s \(target <= 40: (met|NOT met)\); "
        r"oakestra reads per project per resync \d+\.\d\d \[.*\] \(target <= 1: (met|NOT met)\); CPU \d+\.\d \[.*\] % "
        r"\(target <= 10: (met|NOT met)\); RSS \d+ \[.*\] MB \(target <= 300: (met|NOT met)\); "
        r"apply->Training \d+\.\d \[.*\] s",
        r"load average at the end: \d+\.\d\d \d+\.\d\d \d+\.\d\d",
    )),
    # Synthetic bases: no podman, no images; the requirement comes from PyPI.
    "build_cache.py": Smoke(("--repeats", "1", "--bases", "synthetic"), (
        r"bases: synthetic, in the target registry .*",
        *rows("cold", "code-only", "unchanged", pattern=r"run 1 +{name}: +\d+\.\d s  cache .*  steps \(s\): .*"),
        *rows("cold", "code-only", "unchanged", pattern=r" *{name} s +\d+\.\d +\d+\.\d"),
        *rows("code-only", "unchanged", pattern=r"{name}/cold +\d+% +\d+%"),
        r"target code-only: <= 15% of cold and <= 60 s: (met|NOT met) \(worst \d+\.\d s, \d+% of cold\)",
        r"target unchanged: <= 2 s: (met|NOT met) \(worst \d+\.\d s, \d+% of cold\)",
        r"load average at end: \d+\.\d\d \d+\.\d\d \d+\.\d\d",
    ), unusable=package_index),
}


def test_every_bench_script_has_a_smoke_entry():
    scripts = {path.name for path in BENCH.glob("*.py")}
    assert scripts - HELPERS == set(SMOKES), (
        f"bench scripts without a smoke entry: {sorted(scripts - HELPERS - set(SMOKES))}; "
        f"entries without a script: {sorted(set(SMOKES) - scripts)}")
    for helper in HELPERS:  # a script is not hidden among the helpers
        assert "__main__" not in (BENCH / helper).read_text(), f"{helper} runs as a script: give it a smoke entry"


def run(script: str, args: tuple[str, ...], tmp: Path) -> subprocess.CompletedProcess:
    """The script as a user runs it, from bench/; its temporary directories under `tmp`."""
    out, err = tmp / "stdout", tmp / "stderr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, str(BENCH / script), *args], cwd=BENCH, env=env,
                                   stdout=stdout, stderr=stderr)
        try:
            code = process.wait(SECONDS)
        except subprocess.TimeoutExpired:
            stop_tree(process, timeout=30)  # SIGTERM: the benchmarks stop the servers they started
            pytest.fail(f"{script} {' '.join(args)} did not end within {SECONDS} s; its output: "
                        f"{out.read_text(errors='replace')[-3000:]}\n{err.read_text(errors='replace')[-3000:]}")
    return subprocess.CompletedProcess(process.args, code, out.read_text(errors="replace"),
                                       err.read_text(errors="replace"))


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 60)
@pytest.mark.parametrize("script", sorted(SMOKES))
def test_bench_script_runs_tiny_and_prints_its_figures(script, tmp_path):
    smoke = SMOKES[script]
    why = smoke.unusable() if smoke.unusable else None
    if why:
        pytest.skip(why)
    done = run(script, smoke.args, tmp_path)
    context = f"{script} {' '.join(smoke.args)}:\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"exit code {done.returncode}; {context}"
    lines = done.stdout.splitlines()
    missing = [figure for figure in smoke.figures if not any(re.fullmatch(figure, line) for line in lines)]
    assert not missing, f"figures not printed (no line matches): {missing}; {context}"
