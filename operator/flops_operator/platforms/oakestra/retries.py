"""Retries with jittered exponential backoff (tenacity), entered only once a first attempt failed.

Nearly every call succeeds the first time; tenacity's per-call set-up was a tenth of the driver's
CPU at scale, so the first attempt runs plain and only a failure pays for the retry machinery.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_random_exponential

T = TypeVar("T")


async def attempts(step: Callable[[], Awaitable[T]], *, tries: int, retry_on: tuple[type[BaseException], ...],
                   initial: float, maximum: float) -> T:
    """Up to `tries` runs of `step` while it raises one of `retry_on`; the last error is re-raised."""
    try:
        return await step()
    except retry_on:
        if tries <= 1:
            raise
    wait = wait_random_exponential(multiplier=initial, max=maximum)
    await asyncio.sleep(wait(RetryCallState(None, None, (), {})))
    retrying = AsyncRetrying(stop=stop_after_attempt(tries - 1), wait=wait,
                             retry=retry_if_exception_type(retry_on), reraise=True)
    async for attempt in retrying:
        with attempt:
            return await step()
    raise AssertionError("unreachable")
