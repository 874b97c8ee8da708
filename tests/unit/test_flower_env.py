"""The environment every Flower process of ours starts with, as Flower itself reads it."""

from __future__ import annotations

import subprocess
import sys

from flops_runtime import proc

READ_BY_FLOWER = ("import flwr.supercore.telemetry as t, flwr.supercore.superexec.run_superexec as s; "
                  "print(t.FLWR_TELEMETRY_ENABLED)")


def flower_reads(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", READ_BY_FLOWER], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_flower_sends_no_telemetry_from_our_processes(monkeypatch):
    monkeypatch.delenv(proc.TELEMETRY_ENV, raising=False)
    assert flower_reads(proc.flower_env()) == "0"


def test_a_user_can_opt_in_to_flower_telemetry(monkeypatch):
    monkeypatch.setenv(proc.TELEMETRY_ENV, "1")
    assert flower_reads(proc.flower_env()) == "1"
