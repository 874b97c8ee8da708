"""The gatherer's look at a task's source: which commit a branch or tag is at, or a local folder's tree digest.

An effect (git ls-remote over the network, reading files), taken once per spec identity when a training starts
(task_build.needs_version); what it finds is recorded in status.task and is part of the training identity.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Mapping, Protocol

from .models import Project
from .plan.builder import GIT_KNOWN_HOSTS, GIT_PASSWORD, GIT_SSH_KEY, GIT_TOKEN, GIT_USERNAME
from .task_build import SourceVersion

RESOLVE_TIMEOUT_SECONDS = 30.0


class SourceResolver(Protocol):
    async def version(self, project: Project, credentials: Mapping[str, str]) -> SourceVersion:
        """Where the project's task.source is now; `credentials` by the names of plan.builder (may be empty)."""
        ...


class Sources:
    """The real one: git for a repository, the files for a local folder (blocking work in a thread)."""

    async def version(self, project: Project, credentials: Mapping[str, str]) -> SourceVersion:
        source = project.spec.task.source
        assert source is not None
        if source.git is not None:
            return await asyncio.to_thread(_git_version, source.git.url, source.git.ref, source.git.path,
                                           dict(credentials))
        return await asyncio.to_thread(_folder_version, str(source.local))


def _git_version(url: str, ref: str, path: str, credentials: dict[str, str]) -> SourceVersion:
    from flops_builder.errors import BuildError
    from flops_builder.source import GitCredentials, GitSource, resolve_commit

    login = None
    if any(credentials.values()):
        login = GitCredentials.from_secret({
            "username": credentials.get(GIT_USERNAME, ""), "password": credentials.get(GIT_PASSWORD, ""),
            "token": credentials.get(GIT_TOKEN, ""), "ssh-privatekey": credentials.get(GIT_SSH_KEY, ""),
            "known_hosts": credentials.get(GIT_KNOWN_HOSTS, "")})
    try:
        commit = resolve_commit(GitSource(url=url, ref=ref, path=path, credentials=login),
                                timeout=RESOLVE_TIMEOUT_SECONDS)
    except BuildError as exc:
        return SourceVersion(step="resolve", field=exc.field, error=exc.message)
    return SourceVersion(commit=commit)


def _folder_version(folder: str) -> SourceVersion:
    from flops_builder.source import tree_digest

    path = Path(folder)
    if not path.is_dir():
        return SourceVersion(step="resolve", field="spec.task.source.local",
                             error=f"{folder} is not a folder on this machine")
    return SourceVersion(tree=tree_digest(path))
