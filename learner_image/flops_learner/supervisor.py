"""The learner entrypoint's watch over its children (the SuperNode and, with warm ClientApps, their launcher),
the ClientApp's progress file and the aggregator's reachability."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Callable

from flops_runtime import proc

from .client_app import PROGRESS_FILE

log = logging.getLogger("flops_learner")

CHECK_SECONDS = 0.5
SUPERNODE = "flower-supernode"
# A SuperNode the SuperLink does not admit (yet) exits; it is started again after these pauses.
RESTART_SECONDS = (1.0, 2.0, 4.0, 8.0)


class Supervisor:
    def __init__(self, children: dict[str, subprocess.Popen], superlink: str, state_dir: Path, max_wait: float,
                 restart_supernode: Callable[[], subprocess.Popen] | None = None,
                 enroll: Callable[[], None] | None = None):
        self.children, self.superlink, self.state_dir, self.max_wait = children, superlink, state_dir, max_wait
        self.terminated = False
        self.restart_supernode = restart_supernode
        """Starts the SuperNode again: one that exits before its first message may not be admitted yet (a learner
        added while training is registered by the aggregator within seconds of the operator's request)."""
        self.restarts = 0
        self.enroll = enroll
        """Presents this learner's certificate to the aggregator again (flops_learner.enrollment): before the SuperNode
        is started again, and when the aggregator answers after it was gone (a new one knows no learner yet)."""

    def final_round_done(self) -> bool:
        try:
            return bool(json.loads((self.state_dir / PROGRESS_FILE).read_text()).get("final"))
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    def exited(self) -> tuple[str, int] | None:
        for name, child in self.children.items():
            if (code := child.poll()) is not None:
                return name, code
        return None

    def run(self) -> int:
        """The exit code; the caller stops the children (whichever way this returns)."""
        last_seen = self.first_start = time.monotonic()
        was_up = True
        final_since = None
        while True:
            gone = self.exited()
            final = self.final_round_done()
            # A signal to our process group reaches the children too: their exit is then not a failure.
            if self.terminated or (gone is not None and self._signalled()):
                return 0 if final else 143
            if gone is not None and self._restartable(gone):
                continue
            if gone is not None:
                log.error("%s exited with %s", *gone)
                return 0 if final else 1
            now = time.monotonic()
            up = proc.reachable(self.superlink)
            if up and not was_up and self.enroll is not None:
                self.enroll()  # back after it was gone
            was_up = up
            if up:
                last_seen = now
            if final and final_since is None:
                final_since = now
            if final and not up:
                log.info("training run over and the aggregator has stopped: stopping the SuperNode")
                return 0
            if final and now - final_since > self.max_wait:
                log.info("training run over; the aggregator is still up after %.0fs: stopping anyway", self.max_wait)
                return 0
            if not up and now - last_seen > self.max_wait:
                log.warning("aggregator %s unreachable for %.0fs: giving up", self.superlink, self.max_wait)
                return 0
            time.sleep(CHECK_SECONDS)

    def _restartable(self, gone: tuple[str, int]) -> bool:
        """Restart a SuperNode that failed before it ever handled a message, while the aggregator answers and for
        at most max_wait seconds."""
        name, code = gone
        if (name != SUPERNODE or code == 0 or self.restart_supernode is None
                or (self.state_dir / PROGRESS_FILE).exists() or not proc.reachable(self.superlink)
                or time.monotonic() - self.first_start > self.max_wait):
            return False
        pause = RESTART_SECONDS[min(self.restarts, len(RESTART_SECONDS) - 1)]
        log.warning("%s exited with %s before its first message (not admitted yet?): starting it again in %.0f s",
                    name, code, pause)
        time.sleep(pause)
        if self.terminated:
            return False
        if self.enroll is not None:
            self.enroll()
        self.restarts += 1
        self.children[name] = self.restart_supernode()
        return True

    def _signalled(self) -> bool:
        time.sleep(CHECK_SECONDS)  # let our own handler run if the same signal is on its way to us
        return self.terminated

    def stop_all(self) -> None:
        for name, child in self.children.items():
            code = proc.stop_tree(child)
            log.info("%s stopped (%s)", name, code)
