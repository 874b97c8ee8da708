"""`python -m flops_learner.supernode --idle-poll-seconds S -- <flower-supernode arguments>`: Flower's own
SuperNode (`flower-supernode`), with one interval of its loop shortened.

Why: Flower 1.42's SuperNode loop (`start_client_internal` in flwr/supernode/start_client_internal.py) sleeps a
hard-coded 3 s whenever a pull from the SuperLink finds no message, and Flower has no setting for it. The
slowest learner replies, pulls at once, finds nothing (the aggregator is still aggregating) and sleeps 3 s:
every message exchange waits up to 3 s for it.

The same loop waits for the ClientApp's reply, and then for the reply's objects, in 0.5 s sleeps
(`_push_messages`): with a ClientApp that answers in a fraction of a second (flops_learner.warm_clientapp) they
add up to a second to every exchange. They only happen while the loop handles a message and only look at the
SuperNode's own in-process state, so polling it more often costs little.

How: that module's global `time` becomes a view of the time module whose `sleep(3)` sleeps S instead while the
SuperNode is in a training (it handled a message within the last ACTIVE_WINDOW_SECONDS), and Flower's 3 s
otherwise, so an idle learner polls no more than Flower's does; whose `sleep(0.5)` sleeps REPLY_WAIT_SECONDS
(where the pinned Flower's `_push_messages` still has exactly those waits); every other attribute and interval is
the time module's own. The sleeps other than the idle one happen only while the loop handles a message, which is
how the view knows a training is under way. Applied
only to the Flower version it was written against, and only while that loop still reads `time.sleep(3)` right
after `if run_id is None:`; otherwise Flower runs unchanged (3 s, slower but correct) and a warning says so.
tests/unit/test_supernode_idle_poll.py fails loudly when the installed Flower is not that version or the point
is gone, so an upgrade has to revisit this. Nothing of Flower is copied or changed on disk.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import logging
import sys
import time
from importlib import metadata
from types import ModuleType

from flops_runtime import flower_pulls
from flops_runtime.logs import own_logger

log = logging.getLogger("flops_learner")

PINNED_FLOWER = "1.42.0"
FLOWER_IDLE_SECONDS = 3
FLOWER_REPLY_WAIT_SECONDS = 0.5
REPLY_WAIT_SECONDS = 0.05
LOOP_FUNCTION = "start_client_internal"
PUSH_FUNCTION = "_push_messages"
# A learner is "in a training" this long after its last message: longer than the gap between two of its rounds'
# messages in any but very slow trainings (which then wait up to Flower's 3 s more per round).
ACTIVE_WINDOW_SECONDS = 60.0


def _is_sleep(node: ast.stmt, seconds: float) -> bool:
    """`time.sleep(<seconds>)` as a statement."""
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "sleep"
            and isinstance(node.value.func.value, ast.Name) and node.value.func.value.id == "time"
            and len(node.value.args) == 1 and isinstance(node.value.args[0], ast.Constant)
            and node.value.args[0].value == seconds)


def _is_idle_sleep(node: ast.stmt) -> bool:
    return _is_sleep(node, FLOWER_IDLE_SECONDS)


def _is_no_message_branch(node: ast.AST) -> bool:
    """`if run_id is None: ... time.sleep(3) ... continue` (the branch taken when a pull found nothing)."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "run_id"
            and len(node.test.ops) == 1 and isinstance(node.test.ops[0], ast.Is)
            and isinstance(node.test.comparators[0], ast.Constant) and node.test.comparators[0].value is None
            and any(_is_idle_sleep(stmt) for stmt in node.body) and isinstance(node.body[-1], ast.Continue))


def idle_sleep_found(loop_module: ModuleType) -> str | None:
    """None when the loop module still has exactly the point this override targets; else what is different."""
    if getattr(loop_module, "time", None) is not time and not isinstance(getattr(loop_module, "time", None), IdleClock):
        return "the module no longer uses the time module as `time`"
    tree = ast.parse(inspect.getsource(loop_module))
    sleeps = [n for n in ast.walk(tree) if isinstance(n, ast.stmt) and _is_idle_sleep(n)]
    if len(sleeps) != 1:
        return f"{len(sleeps)} `time.sleep({FLOWER_IDLE_SECONDS})` statements instead of one"
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == LOOP_FUNCTION]
    if len(loops) != 1 or not any(_is_no_message_branch(n) for n in ast.walk(loops[0])):
        return f"`{LOOP_FUNCTION}` no longer sleeps {FLOWER_IDLE_SECONDS} s when `run_id is None`"
    return None


def reply_waits_found(loop_module: ModuleType) -> str | None:
    """None when the loop module's `_push_messages` still waits for replies in exactly two `time.sleep(0.5)`."""
    tree = ast.parse(inspect.getsource(loop_module))
    pushes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == PUSH_FUNCTION]
    waits = [n for f in pushes for n in ast.walk(f)
             if isinstance(n, ast.stmt) and _is_sleep(n, FLOWER_REPLY_WAIT_SECONDS)]
    if len(pushes) != 1 or len(waits) != 2:
        return f"`{PUSH_FUNCTION}` no longer waits in two `time.sleep({FLOWER_REPLY_WAIT_SECONDS})`"
    return None


class IdleClock:
    """The time module, except that Flower's idle wait (`sleep(3)`) lasts `idle_seconds` while a training is
    under way: from the start (a learner is started for a training) or any other sleep of the loop (a message
    handled), for `active_window` seconds; and its waits for a reply (`sleep(0.5)`) last `reply_wait_seconds`."""

    def __init__(self, idle_seconds: float, active_window: float = ACTIVE_WINDOW_SECONDS,
                 reply_wait_seconds: float = FLOWER_REPLY_WAIT_SECONDS):
        self.idle_seconds, self.active_window = idle_seconds, active_window
        self.reply_wait_seconds = reply_wait_seconds
        self.active_until = time.monotonic() + active_window

    def sleep(self, seconds: float) -> None:
        if seconds != FLOWER_IDLE_SECONDS:
            self.active_until = time.monotonic() + self.active_window
            if seconds == FLOWER_REPLY_WAIT_SECONDS:
                seconds = self.reply_wait_seconds
        elif time.monotonic() < self.active_until:
            seconds = self.idle_seconds
        time.sleep(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


def install(idle_seconds: float) -> bool:
    """Shorten the SuperNode's idle wait in this process; False (and a warning) where it does not apply."""
    from flwr.supernode import start_client_internal as loop_module

    version = metadata.version("flwr")
    problem = (f"Flower {version} is not {PINNED_FLOWER}" if version != PINNED_FLOWER
               else idle_sleep_found(loop_module))
    if problem:
        log.warning("SuperNode idle poll left at Flower's %s s: %s", FLOWER_IDLE_SECONDS, problem)
        return False
    reply_wait = REPLY_WAIT_SECONDS
    if other := reply_waits_found(loop_module):
        log.warning("SuperNode waits for replies in Flower's %s s: %s", FLOWER_REPLY_WAIT_SECONDS, other)
        reply_wait = FLOWER_REPLY_WAIT_SECONDS
    loop_module.time = IdleClock(idle_seconds, reply_wait_seconds=reply_wait)
    return True


def loop_module_clock() -> IdleClock:
    from flwr.supernode import start_client_internal as loop_module

    return loop_module.time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-poll-seconds", type=float, required=True)
    parser.add_argument("flower_arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    own_logger("flops_learner", "flops-supernode")
    if install(args.idle_poll_seconds):
        log.info("SuperNode idle poll: %g s within %g s of a message, Flower's %s s otherwise; replies awaited "
                 "in %g s steps", args.idle_poll_seconds, ACTIVE_WINDOW_SECONDS, FLOWER_IDLE_SECONDS,
                 loop_module_clock().reply_wait_seconds)
    if flower_pulls.install():  # the message's objects, pulled from the SuperLink
        log.info("object pulls retried after %(initial_backoff)g s, doubling up to %(backoff_cap)g s",
                 flower_pulls.QUICK)
    from flwr.supernode.cli import flower_supernode  # what the `flower-supernode` script runs

    rest = args.flower_arguments[1:] if args.flower_arguments[:1] == ["--"] else args.flower_arguments
    # Flower parses sys.argv and names its process (telemetry, logs) after argv[0].
    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
