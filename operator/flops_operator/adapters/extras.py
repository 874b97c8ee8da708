"""Parts of flops come as pip extras ([local] for `flops run`): a command started without its extra says which one
is missing and how to install it, rather than ending in a ModuleNotFoundError traceback."""

from __future__ import annotations

DISTRIBUTION = "flops-operator"
# Our own top-level packages: one of them missing is a broken install or a bug, not an extra left out.
OWN_PACKAGES = ("flops_operator", "flops_aggregator", "flops_learner", "flops_runtime", "flops_tracking",
                "flops_builder")


def missing_extra(command: str, extra: str, exc: ModuleNotFoundError) -> str | None:
    """The line to print when `flops COMMAND` could not import what EXTRA installs; None when the module that is
    missing is one of ours (then the traceback is the right report)."""
    module = (exc.name or "").partition(".")[0]
    if not module or module in OWN_PACKAGES:
        return None
    return (f"flops {command} needs the [{extra}] extra (module {module!r} is not installed): "
            f"pip install '{DISTRIBUTION}[{extra}]'")
