"""ensure_environment with the real pip and PyPI: only what the running interpreter lacks is installed, the
second time is a cache hit without pip, and a requirement that does not resolve fails cleanly.

pyjokes (pure Python, no dependencies, not in constraints.txt nor in the venv) stands for a task's own
requirement; numpy for one the base images already have."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flops_builder import environment
from flops_builder.environment import ensure_environment
from flops_builder.errors import BuildError

pytestmark = pytest.mark.e2e

JOKES = "pyjokes==0.8.3"


@pytest.fixture(scope="module", autouse=True)
def package_index():
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError as error:
        pytest.skip(f"the package index is not reachable from here: {error}")
    if importlib.util.find_spec("pyjokes") is not None:
        pytest.fail("pyjokes is installed in the venv: the test needs a package the base lacks")


def test_only_what_the_base_lacks_is_installed_then_a_cache_hit(tmp_path, monkeypatch):
    lines: list[str] = []
    env = ensure_environment(f"numpy  # the base has it\n{JOKES}\n", tmp_path / "cache", log=lines.append)
    assert not env.cache_hit and env.site_packages == tmp_path / "cache" / env.key / "site-packages"
    names = sorted(p.name for p in env.site_packages.iterdir())
    assert names == ["pyjokes", "pyjokes-0.8.3.dist-info"]  # no numpy, no .pth, no bin/
    assert list((env.site_packages / "pyjokes" / "__pycache__").glob("*.pyc"))  # compiled, hash-based
    recorded = json.loads((tmp_path / "cache" / env.key / "environment.json").read_text())
    assert recorded["installed"] == {"pyjokes": "0.8.3"} and recorded["alreadyInstalled"] == ["numpy"]
    assert any("installed pyjokes==0.8.3; already installed: numpy" in line for line in lines)

    # The layer on PYTHONPATH of the base interpreter: the new package from it, numpy from the base.
    probe = "import numpy, pyjokes; print(pyjokes.__file__); print(numpy.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(env.site_packages)}).stdout.splitlines()
    assert out[0].startswith(str(env.site_packages)) and not out[1].startswith(str(env.site_packages))

    monkeypatch.setattr(environment, "_run", lambda *a, **k: pytest.fail("pip ran on a cache hit"))
    again = ensure_environment(f"numpy\n{JOKES}", tmp_path / "cache", log=lines.append)
    assert again.cache_hit and again.site_packages == env.site_packages and again.key == env.key
    assert "cache hit" in lines[-1]


def test_a_requirement_that_does_not_resolve(tmp_path):
    cache = tmp_path / "cache"
    lines: list[str] = []
    with pytest.raises(BuildError) as error:
        ensure_environment(f"{JOKES}\nflops-no-such-package-xyz==1.0\n", cache, log=lines.append)
    assert (error.value.step, error.value.field) == ("requirements", "requirements.txt")
    assert error.value.message == ("requirements.txt could not be installed: No matching distribution found for "
                                   "flops-no-such-package-xyz==1.0")
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []  # no env, no build folder
    assert any(line.startswith("  pip: ERROR:") for line in lines)  # pip's own tail for the build log


def test_another_version_of_a_base_package_never_touches_the_base(tmp_path):
    """pip installs the asked-for version into the layer; the base's own copy stays (and a log line says so)."""
    base_version = importlib.metadata.version("six")
    wanted = "1.16.0" if base_version != "1.16.0" else "1.15.0"
    lines: list[str] = []
    env = ensure_environment(f"six=={wanted}\n", tmp_path / "cache", log=lines.append)
    assert (env.site_packages / f"six-{wanted}.dist-info").is_dir()
    importlib.invalidate_caches()
    assert importlib.metadata.version("six") == base_version
    check = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; print(m.version('six'))"],
                           capture_output=True, text=True, check=True, timeout=120, env={
                               k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout.strip()
    assert check == base_version
    assert any(f"replaces the running Python's six {wanted} (base: {base_version})" in line for line in lines)


def test_two_processes_build_one_environment_once(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from flops_builder.environment import ensure_environment
        env = ensure_environment({JOKES!r}, Path(sys.argv[1]), log=lambda line: print(line, file=sys.stderr))
        print(json.dumps({{"hit": env.cache_hit, "site": str(env.site_packages)}}))
    """)
    processes = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache")], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["site"] == results[1]["site"] and Path(results[0]["site"], "pyjokes").is_dir()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")) == [
        Path(results[0]["site"]).parent.name]
