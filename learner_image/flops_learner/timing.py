"""Where a ClientApp's time went, sent back with each reply (record `timing`, keys in contract.py) so the
aggregator can split a round's overhead into delivery, ClientApp start, setup, work and reply.

Timestamps are wall-clock (epoch seconds): the aggregator compares them with its own clock, which is only
meaningful when both run on one host (the benchmark); durations are meaningful everywhere.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

from flwr.app import ConfigRecord

from . import contract as keys


def process_started_at() -> float:
    """When this process was created (fork or exec), in epoch seconds, to the kernel's clock tick.

    psutil's create_time adds the boot time rounded to whole seconds; here the process's age comes from
    the same boot-relative clock as its start, so it is exact to 1/CLK_TCK.
    """
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat(5): start time since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, IndexError, ValueError, AttributeError):
        return time.time()
    return time.time() - max(age, 0.0)


class Stopwatch:
    """The steps of one message: setup (task, data, model), evaluate, fit."""

    def __init__(self) -> None:
        self.entered_at = time.time()
        self.seconds = {keys.SETUP_SECONDS: 0.0, keys.EVALUATE_SECONDS: 0.0, keys.FIT_SECONDS: 0.0}

    @contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def record(self) -> ConfigRecord:
        """Taken last, just before the reply is built: `replied-at` closes the handler's time."""
        return ConfigRecord({keys.STARTED_AT: process_started_at(), keys.ENTERED_AT: self.entered_at,
                             **self.seconds, keys.REPLIED_AT: time.time()})
