"""Loading a user task from an entrypoint "module:attribute", with errors a person can act on.

The attribute may be a task (an object with the contract's methods), a Task subclass (instantiated without
arguments) or a zero-argument callable that returns a task. Whatever goes wrong (no such module, the module raising
on import, no such attribute, a method missing) is a TaskError that names the module, the attribute and the file and
line at fault: the learner, the aggregator, `flops task check` and the image builder all show that message as is.
The module is found on sys.path: the task's source folder is put there (PYTHONPATH in the images, sys.path in
flops_learner.check).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sysconfig
import traceback
from types import ModuleType
from typing import Any

from .task import CONTRACT_METHODS, Task, TaskError

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Frames in these folders are not the user's: a failure is located at the deepest frame outside them.
_LIBRARY_PREFIXES = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")})


def parse_entrypoint(entrypoint: str) -> tuple[str, str]:
    module, sep, attribute = entrypoint.strip().partition(":")
    if not sep or not _DOTTED.match(module) or not _DOTTED.match(attribute):
        raise TaskError(f"entrypoint {entrypoint!r} is not module:attribute (for example wine_task:task)")
    return module, attribute


def from_entrypoint(entrypoint: str) -> Task:
    module_name, attribute = parse_entrypoint(entrypoint)
    module = import_task_module(module_name, f"entrypoint {entrypoint}")
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise TaskError(f"entrypoint {entrypoint}: module {module_name} ({module_file(module)}) has no attribute "
                            f"{attribute!r}{_candidates(module)}")
        obj = getattr(obj, part)
    return as_task(obj, f"entrypoint {entrypoint}")


def from_module(module_name: str) -> Task:
    """The older way (task.module + task.image): the module's `make_task()`, else its `task`."""
    module = import_task_module(module_name, f"task module {module_name}")
    if hasattr(module, "make_task"):
        return as_task(module.make_task, f"{module_name}.make_task")
    if hasattr(module, "task"):
        return as_task(module.task, f"{module_name}.task")
    raise TaskError(f"module {module_name!r} ({module_file(module)}) has neither `task` nor `make_task()`")


def import_task_module(name: str, label: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise TaskError(f"{label}: no module named {name!r} on the path (is the task's folder on sys.path or "
                            "PYTHONPATH, and the module name spelled as its file?)") from None
        raise TaskError(f"{label}: importing {name} failed at {location(exc)}: {describe(exc)} (a dependency "
                        "missing from requirements.txt?)") from exc
    except (Exception, SystemExit) as exc:  # the module's own code raised (or does not parse): name where
        raise TaskError(f"{label}: importing {name} failed at {location(exc)}: {describe(exc)}") from exc


def as_task(obj: Any, label: str) -> Task:
    """The task an entrypoint's attribute stands for: itself, its class's instance, or what a factory returns."""
    if isinstance(obj, type):
        abstract = sorted(getattr(obj, "__abstractmethods__", ()))
        if abstract:
            raise TaskError(f"{label}: class {obj.__name__} ({source(obj)}) lacks method(s) {', '.join(abstract)} "
                            "of the task contract")
        task = _call(obj, label)
    elif callable(obj) and not any(callable(getattr(obj, m, None)) for m in CONTRACT_METHODS):
        task = _call(obj, label)
        if task is None or isinstance(task, type) or not any(hasattr(task, m) for m in CONTRACT_METHODS):
            raise TaskError(f"{label}: {_name(obj)}() ({source(obj)}) returned {type(task).__name__}, not a task "
                            f"(an object with {', '.join(CONTRACT_METHODS)})")
    else:
        task = obj
    check_methods(task, label)
    return task


def check_methods(task: Any, label: str) -> None:
    missing = [m for m in CONTRACT_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise TaskError(f"{label}: the task ({type(task).__name__}, {source(type(task))}) lacks method(s) "
                        f"{', '.join(missing)} of the task contract (flops_learner.task.Task)")


def _call(factory: Any, label: str) -> Any:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        parameters = []
    required = [p.name for p in parameters
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise TaskError(f"{label}: {_name(factory)} ({source(factory)}) needs argument(s) {', '.join(required)}; an "
                        "entrypoint names a task, a Task subclass or a function called without arguments")
    try:
        return factory()
    except Exception as exc:
        raise TaskError(f"{label}: {_name(factory)}() failed at {location(exc)}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def location(exc: BaseException) -> str:
    """file:line where the user's code failed: a syntax error's own place, else the deepest frame that is not
    Python's or an installed library's (a library raising on the user's call is located at that call)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not f.filename.startswith(("<", __file__, *_LIBRARY_PREFIXES))]
    frame = (mine or frames or [None])[-1]
    return f"{frame.filename}:{frame.lineno}" if frame is not None else "(unknown place)"


def source(obj: Any) -> str:
    """file:line where a class or function is defined, as far as Python knows."""
    try:
        file = inspect.getsourcefile(obj) or inspect.getfile(obj)
    except (TypeError, OSError):
        return f"module {getattr(obj, '__module__', '?')}"
    try:
        return f"{file}:{inspect.getsourcelines(obj)[1]}"
    except (TypeError, OSError):
        return file


def module_file(module: ModuleType) -> str:
    return getattr(module, "__file__", None) or "no file"


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__


def _candidates(module: ModuleType) -> str:
    """What the entrypoint might have meant: the module's own tasks, task classes and factories by name."""
    names = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        own = getattr(value, "__module__", None) == module.__name__
        if isinstance(value, type) and own and all(hasattr(value, m) for m in CONTRACT_METHODS):
            names.append(name)
        elif not isinstance(value, (type, ModuleType)) and all(callable(getattr(value, m, None))
                                                                 for m in CONTRACT_METHODS):
            names.append(name)
        elif inspect.isfunction(value) and own and name.startswith(("make", "build", "create")):
            names.append(name)
    return f"; it has: {', '.join(names)}" if names else ""


def load_task(wire: dict) -> Task:
    """The task named by the spec's `task`: wire shape {"name": ...} (built-in), {"entrypoint": "module:attribute"}
    or {"module": ...} (with an image). Raises TaskError naming the module, attribute, method or file at fault."""
    if wire.get("name"):
        from .builtin import BUILTIN_TASKS  # torch: imported only for a built-in task

        try:
            return BUILTIN_TASKS[wire["name"]]()
        except KeyError:
            raise TaskError(f"unknown built-in task {wire['name']!r} (known: {', '.join(BUILTIN_TASKS)})") from None
    if wire.get("entrypoint"):
        return from_entrypoint(wire["entrypoint"])
    if wire.get("module"):
        return from_module(wire["module"])
    raise TaskError("task needs a name (built-in), an entrypoint (module:attribute) or a module")
