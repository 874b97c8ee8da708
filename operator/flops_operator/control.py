"""What the operator asks of a running training through its tracking server (the writes of the MLflow contract in
progress.py): a stop at the next round boundary, the learner count to admit, the address to answer at. The reads are
ProgressSource's (progress.py)."""

from __future__ import annotations

from typing import Protocol

from .models import Project


class TrainingControl(Protocol):
    async def request_stop(self, project: Project, tracking_url: str, run_id: str, reason: str,
                           login: tuple[str, str] | None = None) -> bool:
        """Ask the run's aggregator to stop at its next round boundary (spec.suspend), with a login that may
        write the run (the aggregator's). False if the request could not be written (asked again next look)."""
        ...

    async def request_learners(self, project: Project, tracking_url: str, run_id: str, count: int,
                               login: tuple[str, str] | None = None) -> bool:
        """Ask the run's aggregator to admit exactly `count` learners (learners added or removed while training).
        False if the request could not be written (asked again next look)."""
        ...

    async def allow_address(self, project: Project, tracking_url: str, via: str,
                            login: tuple[str, str] | None = None) -> bool:
        """Make the project's own tracking server answer at tracking_url's host:port: if it refuses that Host,
        write the address to its experiment's allowed-hosts tag, sent with `via` (an address it accepts) as the
        Host; its entrypoint then restarts MLflow with it. False if that was needed and could not be written."""
        ...


class NoControl:
    """The no-op twin: nothing to ask (no tracking server, or tests that do not steer a training)."""

    async def request_stop(self, project: Project, tracking_url: str, run_id: str, reason: str,
                           login: tuple[str, str] | None = None) -> bool:
        return False

    async def request_learners(self, project: Project, tracking_url: str, run_id: str, count: int,
                               login: tuple[str, str] | None = None) -> bool:
        return False

    async def allow_address(self, project: Project, tracking_url: str, via: str,
                            login: tuple[str, str] | None = None) -> bool:
        return False
