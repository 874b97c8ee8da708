"""One call awaited by many (a listing, a read), whose failure goes only to those awaiting it.

When every awaiter is cancelled (an operator stopping cancels its handlers), the call runs on
alone; had it ended in an exception, nobody would retrieve it, and kopf re-raises the exceptions
of tasks left at shutdown (a platform outage became the operator's crash). So the task itself
always ends with a value or cancelled; the exception is handed to each awaiter.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Generic, TypeVar

T = TypeVar("T")


async def _settle(call: Awaitable[T]) -> tuple[bool, T | Exception]:
    try:
        return True, await call
    except Exception as exc:  # handed to the awaiters by Shared.result
        return False, exc


class Shared(Generic[T]):
    def __init__(self, call: Awaitable[T]):
        self._task = asyncio.ensure_future(_settle(call))

    async def result(self) -> T:
        """The call's result or its exception; cancelling the awaiter does not cancel the call."""
        ok, value = await asyncio.shield(self._task)
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]

    def done(self) -> bool:
        return self._task.done()

    def cancel(self) -> None:
        self._task.cancel()
