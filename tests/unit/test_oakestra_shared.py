"""A call shared by several awaiters hands its failure to them, never to the event loop."""

import asyncio

import pytest

from flops_operator.platforms.oakestra.shared import Shared


async def test_every_awaiter_gets_the_result_or_the_exception():
    ok = Shared(asyncio.sleep(0, result=7))
    assert await asyncio.gather(ok.result(), ok.result()) == [7, 7]

    async def fail():
        raise LookupError("gone")
    failing = Shared(fail())
    for _ in range(2):
        with pytest.raises(LookupError, match="gone"):
            await failing.result()


async def test_a_call_whose_awaiters_were_cancelled_ends_without_an_exception_left_over():
    release = asyncio.Event()

    async def fail_later():
        await release.wait()
        raise LookupError("Oakestra unreachable")
    shared = Shared(fail_later())
    waiter = asyncio.ensure_future(shared.result())
    await asyncio.sleep(0)
    waiter.cancel()  # as kopf cancels a handler when the operator stops
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait({task})
        assert task.cancelled() or task.exception() is None  # nothing for kopf to re-raise
    assert shared.done()
