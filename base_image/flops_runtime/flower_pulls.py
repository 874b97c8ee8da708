"""Flower's object pulls, retried sooner: one of the three overrides of Flower in this repository, beside
flops_learner.supernode's idle poll and flops_aggregator.superlink's Control-API lockdown, held to the same rules.

Why: Flower 1.42 sends a message as a small tree plus its objects (the model's arrays) and the receiver pulls
the objects one by one (`pull_objects` in flwr/supercore/inflatable/inflatable_utils.py). An object that is not
there yet is retried after a backoff that starts at 1 s (PULL_INITIAL_BACKOFF, bound as the function's default
`initial_backoff`) and doubles up to 10 s. And it is often not there yet: the SuperNode creates the ClientApp's
task before it has pulled the message's objects from the SuperLink (`_pull_and_store_message`), a sender pushes
the tree before its objects. With a ClientApp that starts in milliseconds (flops_learner.warm_clientapp) nearly
every message then waits a whole second, at each hop. Flower has no setting for it.

How: in our own processes only (the SuperNode wrapper, the ClientApp launcher and its forks, the ServerApp),
the defaults of that function and of `pull_and_inflate_object_from_tree` (which passes its own on) become a 0.05 s initial backoff doubling up to 1 s: a pull that misses costs
a few more requests, not a second. Every other argument, and every call that passes its own, is Flower's.
Applied only to the Flower version it was written against and only while the function still has those
defaults; otherwise Flower runs unchanged (slower but correct) and a warning says so.
tests/unit/test_flower_pulls.py fails loudly when that point is gone, so an upgrade has to revisit this.
Nothing of Flower is copied or changed on disk.
"""

from __future__ import annotations

import logging
from importlib import metadata

log = logging.getLogger("flops_runtime")

PINNED_FLOWER = "1.42.0"
FLOWER_DEFAULTS = {"initial_backoff": 1, "backoff_cap": 10}
QUICK = {"initial_backoff": 0.05, "backoff_cap": 1.0}
FUNCTIONS = ("pull_objects", "pull_and_inflate_object_from_tree")


def problem() -> str | None:
    """None when the installed Flower has exactly the point this override targets; else what is different."""
    from flwr.supercore.inflatable import inflatable_utils

    version = metadata.version("flwr")
    if version != PINNED_FLOWER:
        return f"Flower {version} is not {PINNED_FLOWER}"
    for name in FUNCTIONS:
        defaults = getattr(getattr(inflatable_utils, name, None), "__kwdefaults__", None) or {}
        found = {key: defaults.get(key) for key in FLOWER_DEFAULTS}
        if found != FLOWER_DEFAULTS and found != QUICK:
            return f"{name}'s backoff defaults are {found}, not {FLOWER_DEFAULTS}"
    return None


def install() -> bool:
    """Quick retries for this process's object pulls; False (and a warning) where the override does not apply."""
    from flwr.supercore.inflatable import inflatable_utils

    found = problem()
    if found:
        log.warning("Flower's object pulls keep their 1 s backoff: %s", found)
        return False
    for name in FUNCTIONS:
        getattr(inflatable_utils, name).__kwdefaults__.update(QUICK)
    return True
