"""The local environment's cache key (normalized requirements + the running interpreter's identity) and its
cache discipline, with pip stubbed (tests/e2e/test_source_environment.py runs the real pip)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from flops_builder import environment
from flops_builder.environment import (Environment, base_identity, base_packages, ensure_environment,
                                       environment_key, normalize_requirements)
from flops_builder.errors import BuildError


@pytest.mark.parametrize("text, normalized", [
    ("", ""),
    ("\n  \n# only a comment\n", ""),
    ("numpy\npyjokes==0.8.3\n", "numpy\npyjokes==0.8.3"),
    ("  numpy  # the base has it\n\n\tpyjokes==0.8.3\r\n", "numpy\npyjokes==0.8.3"),
    ("b\na\n", "b\na"),  # order kept: pip reads them in order
    ("requests[socks] >= 2.0 ; python_version >= '3.8'\n", "requests[socks] >= 2.0 ; python_version >= '3.8'"),
    ("pkg @ https://example.com/pkg.tar.gz#egg=pkg\n", "pkg @ https://example.com/pkg.tar.gz#egg=pkg"),
    ("pkg==1.0 \\\n    --hash=sha256:abc\n", "pkg==1.0     --hash=sha256:abc"),
    ("--extra-index-url https://pypi.example.com/simple\nx\n", "--extra-index-url https://pypi.example.com/simple\nx"),
])
def test_normalize(text, normalized):
    assert normalize_requirements(text) == normalized


@pytest.mark.parametrize("line", ["-r other.txt", "--requirement=other.txt", "-c constraints.txt", "-e .",
                                  "--editable ./lib", "./lib", "../lib", "/opt/wheels/x.whl", ".", "file:///tmp/x"])
def test_requirements_that_the_text_alone_does_not_pin_are_refused(line):
    with pytest.raises(BuildError) as error:
        normalize_requirements(f"numpy\n{line}\n")
    assert (error.value.step, error.value.field) == ("requirements", "requirements.txt")
    assert "line 2" in error.value.message and line.split()[0] in error.value.message


def test_the_key_follows_requirements_and_base_only():
    key = environment_key("numpy\npyjokes==0.8.3\n", "sha256:base")
    assert len(key) == 32 and int(key, 16) >= 0
    assert environment_key("# deps\nnumpy  \n\npyjokes==0.8.3  # jokes", "sha256:base") == key
    assert environment_key("pyjokes==0.8.3\nnumpy", "sha256:base") != key
    assert environment_key("numpy\npyjokes==0.8.2", "sha256:base") != key
    assert environment_key("numpy\npyjokes==0.8.3", "sha256:other") != key


def test_base_identity_is_fast_cached_and_sees_the_installed_packages():
    base_identity.cache_clear()
    base_packages.cache_clear()
    started = time.perf_counter()
    identity = base_identity()
    assert time.perf_counter() - started < 5
    assert identity.startswith("sha256:") and base_identity() is identity
    packages = base_packages()
    import numpy

    assert packages["numpy"] == numpy.__version__ and "pip" in packages


def test_no_requirements_no_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "_install", pytest.fail)
    env = ensure_environment("# nothing\n", tmp_path / "cache", base="b", log=lambda line: None)
    assert env == Environment(environment_key("", "b"), None, cache_hit=True)
    assert not (tmp_path / "cache").exists()


def fake_install(calls: list[str], delay: float = 0.0, fail: bool = False):
    def install(wanted, build, final, log, timeout):
        calls.append(wanted)
        (build / "site-packages" / "pkg").mkdir(parents=True)
        time.sleep(delay)
        if fail:
            raise BuildError("requirements", "requirements.txt", "no such package")
    return install


def test_built_once_then_a_cache_hit(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(environment, "_install", fake_install(calls))
    lines: list[str] = []
    first = ensure_environment("pkg\n", tmp_path, base="b", log=lines.append)
    second = ensure_environment("pkg  # same\n", tmp_path, base="b", log=lines.append)
    assert calls == ["pkg"]
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert first.site_packages == second.site_packages == tmp_path / first.key / "site-packages"
    assert "cache hit" in lines[-1]


def test_a_failed_install_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "_install", fake_install([], fail=True))
    with pytest.raises(BuildError):
        ensure_environment("pkg\n", tmp_path, base="b", log=lambda line: None)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_a_killed_build_is_cleaned_up_by_the_next(tmp_path, monkeypatch):
    key = environment_key("pkg", "b")
    (tmp_path / f".build-{key}-dead" / "venv").mkdir(parents=True)
    monkeypatch.setattr(environment, "_install", fake_install([]))
    ensure_environment("pkg\n", tmp_path, base="b", log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([key, f".{key}.lock"])


def test_concurrent_callers_of_one_key_install_once(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(environment, "_install", fake_install(calls, delay=0.5))
    results: list[Environment] = []
    lines: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(
        ensure_environment("pkg\n", tmp_path, base="b", log=lines.append))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert calls == ["pkg"]
    assert sorted(r.cache_hit for r in results) == [False, True, True]
    assert len({r.site_packages for r in results}) == 1
    assert any("waiting" in line for line in lines)


def test_an_empty_install_has_no_site_packages(tmp_path, monkeypatch):
    def install(wanted, build, final, log, timeout):  # every requirement already installed
        (build / "requirements.txt").write_text(wanted)

    monkeypatch.setattr(environment, "_install", install)
    env = ensure_environment("numpy\n", tmp_path, base="b", log=lambda line: None)
    assert env.site_packages is None and (tmp_path / env.key).is_dir()
    assert ensure_environment("numpy\n", tmp_path, base="b", log=lambda line: None) == Environment(
        env.key, None, cache_hit=True)


def test_site_packages_path_is_inside_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "_install", fake_install([]))
    env = ensure_environment("pkg\n", tmp_path / "c", base="b", log=lambda line: None)
    assert env.site_packages == Path(tmp_path / "c" / env.key / "site-packages")
    assert (env.site_packages / "pkg").is_dir()
