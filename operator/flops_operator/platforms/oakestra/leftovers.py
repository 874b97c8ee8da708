"""What is left of a project on Oakestra after its delete, found by name, and how to say so.

Oakestra can keep a job its application no longer lists (oakestra-api.md §13.13): deleting the
application then leaves the job and its round-robin address behind, and the job can no longer be
deleted through the API. So a delete counts as done only once a listing shows nothing of the project.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Mapping

from ...models import ProjectRef
from . import names
from .shared import Shared
from .sla import identity


def of_project(project: ProjectRef, jobs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The jobs named after the project's application (the four-part job_name starts with it)."""
    app, namespace = names.app_name(project), names.app_namespace(project)
    return [j for j in jobs if j.get("app_name") == app and j.get("app_ns") == namespace]


def describe(project: ProjectRef, jobs: Iterable[Mapping[str, Any]]) -> str:
    parts = []
    for job in jobs:
        ident = identity(job)
        name = ident.service if ident else str(job.get("microservice_name") or "?")
        job_id = job.get("microserviceID") or (job.get("_id") or {}).get("$oid") or "?"
        parts.append(f"{name} (job {job_id}, address {job.get('RR_ip') or 'none'})")
    return (f"Oakestra still has {len(parts)} service(s) of {project.key} after deleting them: {', '.join(parts)}. "
            "If its application lost them from its service list (oakestra-api.md §13.13), Oakestra can no "
            "longer delete them: remove them on Oakestra by hand, or set spec.deletionPolicy: Orphan")


class JobListing:
    """All of Oakestra's jobs (Admin's GET /api/services/), one listing shared by every caller
    whose deletes were over when it started; None where the user may not list them."""

    def __init__(self, fetch: Callable[[], Awaitable[list[dict] | None]]):
        self._fetch = fetch
        self._listing: Shared[list[dict] | None] | None = None
        self._started_after = 0
        self._forbidden = False
        self.deletes = 0
        """Deletes finished so far; a caller needs a listing started after its own."""

    async def after_deletes(self) -> list[dict] | None:
        mark = self.deletes
        while not self._forbidden:
            if self._listing is None or self._listing.done():
                self._listing, self._started_after = Shared(self._fetch()), self.deletes
            listing, fresh = self._listing, self._started_after >= mark
            result = await listing.result()
            # Roles do not change while the operator runs: one refusal is enough to know.
            self._forbidden = result is None
            if fresh:
                return result
        return None

    def cancel(self) -> None:
        if self._listing is not None and not self._listing.done():
            self._listing.cancel()
