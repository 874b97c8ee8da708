"""The emulator in a process of its own: for a caller whose CPU must be its own (the scale benchmark
measures the driver's CPU; an emulator in a thread would share its interpreter lock and its figure).

    with emulator_in_process(latency=0.02) as emu:
        emu.url, emu.calls(), emu.clear_calls(), emu.world()
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from contextlib import contextmanager
from typing import Any, Iterator

from .server import Emulator, run_emulator

START_SECONDS = 60.0


def _world(emu: Emulator) -> dict[str, Any]:
    """What a caller asserts on, summed up (the records themselves stay in this process)."""
    sm = emu.sm
    return {
        "apps": len(emu.apps()),
        "services_per_app": sorted(len(emu.jobs(a["applicationID"])) for a in emu.apps()),
        "jobs": len(emu.jobs()),
        "duplicate_service_writes": sum(n - 1 for n in sm.upserts.values()),
        "extra_instance_requests": sum(n - 1 for n in sm.instance_requests.values()),
        "overlapping_list_writes": sum(sm.overlapping_list_writes.values()),
        "peak_list_writers": sm.peak_list_writers,
        "lost_services": len(emu.lost_services()),
        "cpu_seconds": time.process_time(),
    }


async def _serve(conn, settings: dict) -> None:
    loop = asyncio.get_running_loop()
    async with run_emulator(**settings) as emu:
        conn.send(emu.url)
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "stop":
                conn.send(None)
                return
            if command == "calls":
                conn.send([(c.method, c.route, c.status) for c in emu.calls])
            elif command == "clear_calls":
                emu.clear_calls()
                conn.send(None)
            elif command == "world":
                conn.send(_world(emu))
            else:
                conn.send(ValueError(f"unknown command {command!r}"))


def _main(conn, settings: dict) -> None:
    asyncio.run(_serve(conn, settings))


class EmulatorProcess:
    def __init__(self, url: str, conn):
        self.url, self._conn = url, conn

    def _ask(self, command: str) -> Any:
        self._conn.send(command)
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def calls(self) -> list[tuple[str, str, int | str]]:
        """(method, route template, status) of every call so far."""
        return self._ask("calls")

    def clear_calls(self) -> None:
        self._ask("clear_calls")

    def world(self) -> dict[str, Any]:
        return self._ask("world")


@contextmanager
def emulator_in_process(**settings) -> Iterator[EmulatorProcess]:
    """Same settings as run_emulator (picklable ones: no ManualClock, no hooks)."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited event loop or threads
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_main, args=(child, settings), name="oakestra-emulator", daemon=True)
    process.start()
    try:
        if not parent.poll(START_SECONDS):
            raise RuntimeError("the emulator process did not start")
        yield EmulatorProcess(parent.recv(), parent)
        parent.send("stop")
        parent.recv()
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
