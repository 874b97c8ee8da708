"""Driving a project through the reconcile step the adapters take, on the local platform (real MLflow, FTP,
Flower processes), with its spec edited between looks as a GitOps tool would."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import time
from pathlib import Path

from flops_operator.credentials import FileCredentials
from flops_operator.models import FLOpsProjectStatus, Phase
from flops_operator.platforms.local import LocalPlatform
from flops_operator.control_mlflow import MlflowControl
from flops_operator.progress_mlflow import MlflowProgress
from flops_operator.reconcile import Passes, converge, finalize

BOUND_SECONDS = 1200  # a bound for hangs only: 2 shared cores may be busy


def edited(doc: dict, **spec) -> dict:
    """The next generation with these top-level spec fields replaced."""
    out = copy.deepcopy(doc)
    out["metadata"]["generation"] += 1
    out["spec"].update(spec)
    return out


class Driver:
    def __init__(self, root: Path, doc: dict) -> None:
        self.doc, self.status, self.root = doc, FLOpsProjectStatus(), root
        self.platform = LocalPlatform(lambda ref: root, stop_timeout=15)
        self.credentials = FileCredentials(lambda ref: root / "credentials.json")
        self.progress, self.control = MlflowProgress(), MlflowControl()

    async def until(self, done, what: str) -> FLOpsProjectStatus:
        deadline = time.monotonic() + BOUND_SECONDS
        while True:
            result = await converge(self.doc, Passes(self.status), platform=self.platform,
                                    credentials=self.credentials, progress_source=self.progress,
                                    control=self.control)
            self.status = result.status
            if done(self.status):
                return self.status
            assert self.status.phase is not Phase.Failed, self.status.message
            assert time.monotonic() < deadline, f"never: {what}; last: {self.status.message}"
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        try:
            await finalize(self.doc, platform=self.platform, credentials=self.credentials)
        finally:
            await self.platform.close()
            await self.progress.close()
            await self.control.close()


def ready(status: FLOpsProjectStatus, phase: Phase) -> bool:
    condition = status.condition("Ready")
    return status.phase is phase and condition is not None and condition.status == "True"


@contextlib.contextmanager
def as_reader(password: str):
    """The tracking server takes logins: read as the project's read-only user."""
    os.environ.update(MLFLOW_TRACKING_USERNAME="flops-reader", MLFLOW_TRACKING_PASSWORD=password)
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)


def reader_password(driver: Driver) -> str:
    return json.loads((driver.root / "credentials.json").read_text())["mlflow-reader-password"]
