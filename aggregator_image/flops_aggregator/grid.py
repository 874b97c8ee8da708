"""A Grid wrapper that bounds waits and polls replies more often than Flower's deployment Grid.

Flower's `send_and_receive` sleeps 3 s between pulls and its node sampling waits forever for the minimum
number of learners. This wrapper keeps the public Grid API (push/pull) and only changes those two waits:
replies are pulled every POLL_SECONDS, and a round that lacks learners for longer than the round timeout
fails the run instead of hanging it. It also notes when it pushed and when each reply arrived (timing.py),
and can run one piece of the ServerApp's own work right after a push, while the learners work (`after_push`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from flwr.app import Message
from flwr.serverapp import Grid

POLL_SECONDS = 0.05
log = logging.getLogger("flops_aggregator")


class NotEnoughLearners(RuntimeError):
    pass


class BoundedGrid(Grid):
    def __init__(self, inner: Grid, min_nodes: int, wait_timeout: float, poll_seconds: float = POLL_SECONDS):
        self._inner, self._min_nodes, self._wait_timeout, self._poll = inner, min_nodes, wait_timeout, poll_seconds
        self._short_since: float | None = None
        self.pushed_at: float | None = None
        self.received_at: dict[str, float] = {}
        """Reply message id -> when a pull brought it (the last exchange's replies only)."""
        self._after_push: Callable[[], None] | None = None

    def after_push(self, work: Callable[[], None]) -> None:
        """Run `work` once, right after the next exchange's messages are pushed: it overlaps the learners'
        part of that exchange instead of adding to it. Its failure is logged, never the exchange's."""
        self._after_push = work

    def set_run(self, run):
        self._inner.set_run(run)

    @property
    def run(self):
        return self._inner.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return self._inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        nodes = list(self._inner.get_node_ids())
        now = time.monotonic()
        if len(nodes) >= self._min_nodes:
            self._short_since = None
        elif self._short_since is None:
            self._short_since = now
        elif now - self._short_since > self._wait_timeout:
            raise NotEnoughLearners(
                f"only {len(nodes)} of the {self._min_nodes} required learners connected for "
                f"{self._wait_timeout:.0f}s")
        return nodes

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self.pushed_at, self.received_at = time.time(), {}
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._inner.pull_messages(message_ids))
        now = time.time()
        for reply in replies:
            self.received_at.setdefault(reply.metadata.message_id, now)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        work, self._after_push = self._after_push, None
        if work is not None:
            try:
                work()
            except Exception as exc:
                log.warning("work overlapping the exchange failed: %s", exc)
        replies: list[Message] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            got = list(self.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self._poll)
        return replies
