"""The override of Flower's object-pull backoff (flops_runtime.flower_pulls). These tests fail loudly when the
installed Flower is not the pinned one or no longer has that point, so an upgrade has to revisit it."""

from __future__ import annotations

import threading
from importlib import metadata
from pathlib import Path

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from flops_runtime import flower_pulls
from flops_learner import supernode

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restored():
    """Flower's own defaults for the test (a ServerApp trained in this process may have installed the override),
    and what was there before for the other tests."""
    saved = {name: dict(getattr(inflatable_utils, name).__kwdefaults__) for name in flower_pulls.FUNCTIONS}
    for name in flower_pulls.FUNCTIONS:
        getattr(inflatable_utils, name).__kwdefaults__.update(flower_pulls.FLOWER_DEFAULTS)
    yield
    for name, defaults in saved.items():
        getattr(inflatable_utils, name).__kwdefaults__.update(defaults)


class _Waits(threading.Event):
    """threading.Event whose timed waits are recorded and return at once (nobody sets it)."""

    waited: list[float] = []

    def wait(self, timeout=None):
        if timeout is not None:
            _Waits.waited.append(timeout)
            return False
        return super().wait()


def first_retry_wait(monkeypatch) -> float:
    """Pull one object that is missing twice; the wait before the first retry."""
    misses = [1, 1]

    def pull(object_id: str) -> bytes:
        if misses:
            misses.pop()
            raise ObjectUnavailableError(object_id)
        return b"content"

    _Waits.waited = []
    monkeypatch.setattr(inflatable_utils.threading, "Event", _Waits)
    monkeypatch.setattr(inflatable_utils.random, "uniform", lambda low, high: 0.0)  # no jitter
    assert inflatable_utils.pull_objects(["a"], pull) == {"a": b"content"}
    assert len(_Waits.waited) == 2
    return _Waits.waited[0]


def test_the_pinned_flower_still_has_the_backoff_this_override_shortens():
    pinned = next(line.split("==", 1)[1].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if line.startswith("flwr=="))
    assert metadata.version("flwr") == flower_pulls.PINNED_FLOWER == supernode.PINNED_FLOWER == pinned, (
        "Flower changed: re-read flwr/supercore/inflatable/inflatable_utils.py and update or drop "
        "flops_runtime.flower_pulls before moving its PINNED_FLOWER")
    assert flower_pulls.problem() is None


def test_a_missing_object_is_retried_after_a_twentieth_of_a_second_not_a_second(monkeypatch, restored):
    assert first_retry_wait(monkeypatch) == pytest.approx(1.0)  # Flower's own
    assert flower_pulls.install()
    assert first_retry_wait(monkeypatch) == pytest.approx(0.05)
    assert _Waits.waited[1] == pytest.approx(0.1)  # still doubling


def test_the_tree_pull_a_clientapp_uses_passes_the_quick_backoff_on(restored):
    assert flower_pulls.install()
    for name in flower_pulls.FUNCTIONS:
        defaults = getattr(inflatable_utils, name).__kwdefaults__
        assert {key: defaults[key] for key in flower_pulls.QUICK} == flower_pulls.QUICK, name
        assert defaults["max_time"] == 7200  # everything else stays Flower's


def test_another_flower_is_left_alone_with_a_warning(monkeypatch, restored, caplog):
    monkeypatch.setattr(flower_pulls.metadata, "version", lambda name: "9.9.9")
    assert not flower_pulls.install()
    assert "Flower 9.9.9 is not 1.42.0" in caplog.text
    assert inflatable_utils.pull_objects.__kwdefaults__["initial_backoff"] == 1
