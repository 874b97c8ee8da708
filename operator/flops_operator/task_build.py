"""A task from task.source, as decisions: which code version a training runs, and where its build stands.

Pure. The gatherer (sources.py) resolves the version once per spec identity; the image builder (a one-shot
service, builder_image/) prints its progress and its result, which `advance` reads from the service's output.
What the build made goes into status.task; the plan runs the training services from it, and the builder goes.

    status.task.buildPhase   Resolving -> Building -> Built
                                     \\-> Failed (naming the field or file, and the step)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flops_builder import results

from . import redaction
from .models import Project
from .models.edits import training_identity
from .models.spec import public_uri
from .models.status import BuildCache, TaskStatus
from .observed import ObservedService, ServiceState

BUILDING, BUILT, FAILED = "Building", "Built", "Failed"
PROGRESS_MARK = "flops-build:"


@dataclass(frozen=True)
class SourceVersion:
    """What the gatherer found the source at: a commit (Git) or the tree digest of a local folder, or why not."""

    commit: str | None = None
    tree: str | None = None
    step: str | None = None
    field: str | None = None
    error: str | None = None


def spec_identity(project: Project) -> str:
    return training_identity(project.spec)


def source_label(project: Project) -> str:
    source = project.spec.task.source
    assert source is not None
    if source.git is not None:
        url = public_uri(source.git.url) if source.git.url.startswith(("http://", "https://")) else source.git.url
        return url + (f" ({source.git.path})" if source.git.path else "")
    return str(source.local)


def needs_version(project: Project, previous: TaskStatus | None) -> bool:
    """A version is resolved when a training starts: no task status for this spec yet, or its resolving failed
    (an unreachable repository or a missing Secret is tried again at every look)."""
    if project.spec.task.source is None:
        return False
    if previous is None or previous.spec_identity != spec_identity(project):
        return True
    return previous.build_phase == FAILED and previous.build_step == "resolve"


def start(project: Project, previous: TaskStatus | None, version: SourceVersion | None, now: str) -> TaskStatus | None:
    """The task status a step starts from: the previous one while it is this spec's, else a new one."""
    if project.spec.task.source is None:
        return None
    if version is None:
        assert previous is not None
        return previous
    git = project.spec.task.source.git
    task = TaskStatus(spec_identity=spec_identity(project), source=source_label(project),
                      ref=git.ref if git else None, commit=version.commit, tree=version.tree,
                      entrypoint=project.spec.task.entrypoint, build_started_at=now)
    if version.error is not None:
        return task.model_copy(update={"build_phase": FAILED, "build_step": version.step or "resolve",
                                       "build_message": _named(version.field, version.error)})
    return task.model_copy(update={"build_phase": BUILDING, "build_step": "pending",
                                   "build_message": "waiting for the builder to start"})


def code_version(task: TaskStatus | None) -> str | None:
    """What of the source is part of the training identity."""
    if task is None:
        return None
    return task.commit or task.tree


def advance(task: TaskStatus, builder: ObservedService | None, builder_hash: str | None, now: str) -> TaskStatus:
    """Read the builder's output into the task status (only a builder of this build: same spec hash)."""
    if task.build_phase != BUILDING or builder is None or builder.spec_hash != builder_hash:
        return task
    result, error, progress = parse_output(builder.output)
    if result is not None and builder.state is ServiceState.completed:
        return _built(task, result)
    if error is not None or builder.state is ServiceState.failed:
        error = error or {}
        tail = _tail(builder.output) or builder.message or "it stopped without saying why"
        message = error.get("message") or f"the builder failed: {tail}"
        return task.model_copy(update={
            "build_phase": FAILED, "build_step": error.get("step") or task.build_step or "build",
            "build_message": _named(error.get("field"), message),
        })
    update: dict[str, Any] = {}
    if progress is not None:
        update.update(build_step=progress.get("step") or task.build_step, build_message=progress.get("text"))
    elif builder.state is ServiceState.running:
        update.update(build_step="start", build_message="the builder is starting")
    return task.model_copy(update=update) if update else task


def _built(task: TaskStatus, result: dict) -> TaskStatus:
    cache = result.get("cache") or {}
    return task.model_copy(update={
        "build_phase": BUILT, "build_step": "done",
        "build_message": _summary(result),
        "commit": result.get("commit") or task.commit, "tree": result.get("tree") or task.tree,
        "entrypoint": result.get("entrypoint") or task.entrypoint,
        "image": result.get("learner"), "aggregator_image": result.get("aggregator"),
        "environment": result.get("environment"), "python_path": result.get("pythonPath"),
        "build_seconds": result.get("seconds"),
        "cache": BuildCache(**{k: str(v) for k, v in cache.items() if k in ("images", "deps", "code")}) if cache else None,
    })


def _summary(result: dict) -> str:
    cache = result.get("cache") or {}
    hits = ", ".join(f"{what} {state}" for what, state in cache.items())
    seconds = result.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    return f"built{took}" + (f" ({hits})" if hits else "")


def _named(field: str | None, message: str) -> str:
    return f"{field}: {message}" if field and not message.startswith(field) else message


def _tail(output: str, lines: int = 3) -> str:
    # Shapes here; the reconcile step blanks the project's credentials out of the whole status.
    return redaction.tail(output, lines=lines, limit=400,
                          keep=lambda line: results.RESULT not in line and results.ERROR not in line)


def parse_output(output: str) -> tuple[dict | None, dict | None, dict | None]:
    """(result, error, last progress) from a builder's output; each None when not there."""
    found = results.parse(output)
    result = found if found is not None and found.get("ok") else None
    error = found if found is not None and not found.get("ok") else None
    progress = None
    for line in output.splitlines():
        at = line.find(PROGRESS_MARK)
        if at >= 0:
            step, _, text = line[at + len(PROGRESS_MARK):].strip().partition(" ")
            progress = {"step": step.removeprefix("step="), "text": f"{step.removeprefix('step=')}: {text}"}
    return result, error, progress


def failed(task: TaskStatus | None) -> bool:
    return task is not None and task.build_phase == FAILED


def building(task: TaskStatus | None) -> bool:
    return task is not None and task.build_phase == BUILDING


def built(task: TaskStatus | None) -> bool:
    return task is not None and task.build_phase == BUILT
