"""An override of Flower in this repository (flops_learner.supernode): the SuperNode loop's hard-coded 3 s idle
wait and 0.5 s waits for a reply (the other two overrides, of object pulls and of the SuperLink's middleware, are
tested in test_flower_pulls.py and test_superlink_fleet_only.py). These tests fail loudly when the installed Flower
is not the pinned one or its loop no longer has that point, so a Flower upgrade has to revisit the override (and
may be able to drop it)."""

from __future__ import annotations

import importlib.util
import time
from importlib import metadata
from pathlib import Path

import pytest
from flwr.supernode import start_client_internal as loop_module

from flops_learner import supernode

ROOT = Path(__file__).resolve().parents[2]


def test_the_pinned_flower_still_has_the_idle_wait_this_override_shortens():
    pinned = next(line.split("==", 1)[1].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if line.startswith("flwr=="))
    assert metadata.version("flwr") == supernode.PINNED_FLOWER == pinned, (
        "Flower changed: re-read flwr/supernode/start_client_internal.py and update or drop "
        "flops_learner.supernode (the 3 s idle wait override) before moving its PINNED_FLOWER")
    assert supernode.idle_sleep_found(loop_module) is None
    assert supernode.reply_waits_found(loop_module) is None


class _Clock:
    """time.sleep and time.monotonic, simulated: sleeping advances the clock."""

    def __init__(self, monkeypatch):
        self.now, self.slept = 1000.0, []
        monkeypatch.setattr(time, "monotonic", lambda: self.now)
        monkeypatch.setattr(time, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_only_the_idle_wait_is_shortened_and_only_within_a_training(monkeypatch):
    clock = _Clock(monkeypatch)
    view = supernode.IdleClock(0.2, active_window=60)
    view.sleep(3)  # just started: a learner is started for a training
    view.sleep(0.5)  # the SuperNode's wait for a ClientApp's reply (a message handled) stays Flower's
    view.sleep(1)
    assert clock.slept == [0.2, 0.5, 1]
    clock.now += 58  # 59 s after the last message (the 1 s wait above was one too)
    view.sleep(3)
    clock.now += 1
    view.sleep(3)  # a minute without a message: polling as seldom as Flower does
    view.sleep(3)
    assert clock.slept[3:] == [0.2, 3, 3]
    view.sleep(0.5)  # a message again
    view.sleep(3)
    assert clock.slept[6:] == [0.5, 0.2]
    assert view.time is time.time


def test_waits_for_a_reply_are_shortened_and_count_as_a_message_handled(monkeypatch):
    clock = _Clock(monkeypatch)
    view = supernode.IdleClock(0.2, active_window=60, reply_wait_seconds=0.05)
    clock.now += 61  # past the start's window: idle
    view.sleep(3)
    view.sleep(0.5)  # a message is being handled: its reply awaited
    view.sleep(3)
    assert clock.slept == [3, 0.05, 0.2]


def test_install_swaps_the_loop_module_clock(monkeypatch):
    monkeypatch.setattr(loop_module, "time", time)
    assert supernode.install(0.25)
    assert isinstance(loop_module.time, supernode.IdleClock) and loop_module.time.idle_seconds == 0.25
    assert loop_module.time.reply_wait_seconds == supernode.REPLY_WAIT_SECONDS


def test_install_leaves_another_flower_version_alone(monkeypatch):
    monkeypatch.setattr(loop_module, "time", time)
    monkeypatch.setattr(supernode.metadata, "version", lambda name: "1.43.0")
    assert not supernode.install(0.25)
    assert loop_module.time is time


LOOPS = {
    "pinned": "import time\ndef start_client_internal():\n    while True:\n        run_id = pull()\n"
              "        if run_id is None:\n            time.sleep(3)\n            continue\n        push()\n",
    "interval changed": "import time\ndef start_client_internal():\n    while True:\n        run_id = pull()\n"
                        "        if run_id is None:\n            time.sleep(1)\n            continue\n",
    "moved elsewhere": "import time\ndef start_client_internal():\n    while True:\n        run_id = pull()\n"
                       "        if run_id is None:\n            continue\n        time.sleep(3)\n",
    "sleep imported by name": "from time import sleep\ndef start_client_internal():\n    while True:\n"
                              "        run_id = pull()\n        if run_id is None:\n            sleep(3)\n"
                              "            continue\n",
}


@pytest.mark.parametrize("name", LOOPS)
def test_the_guard_recognises_only_the_pinned_shape_of_the_loop(tmp_path, name):
    path = tmp_path / "fake_loop.py"
    path.write_text(LOOPS[name])
    spec = importlib.util.spec_from_file_location(f"fake_loop_{abs(hash(name))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = supernode.idle_sleep_found(module)
    assert (found is None) is (name == "pinned"), found
