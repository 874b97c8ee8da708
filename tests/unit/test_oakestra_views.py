"""Per-project views: a read counts only for writes finished before it started; reads are shared."""

import asyncio

import pytest

from flops_operator.models import ProjectRef
from flops_operator.platforms.oakestra.interpret import StoredService
from flops_operator.platforms.oakestra.views import AppGone, Views

REF = ProjectRef("ns", "p", "uid-1")
OTHER = ProjectRef("ns", "q", "uid-2")


def svc(version: str, rr_ip: str | None = None) -> StoredService:
    return StoredService(id=version, oakestra_name="svc", identity=None, rr_ip=rr_ip, status=None,
                         status_detail="", instances=())


class Reads:
    def __init__(self):
        self.count, self.gone = 0, []
        self.release = asyncio.Event()
        self.result = {"svc": svc("v1")}

    async def __call__(self, app_id):
        self.count += 1
        await self.release.wait()
        return self.result


async def test_concurrent_needs_share_one_read_and_later_writes_force_another():
    reads = Reads()
    views = Views(reads, reads.gone.append)
    waiting = [asyncio.ensure_future(views.current(REF, "app", fresh_for=n)) for n in ("a", "b", "c")]
    await asyncio.sleep(0)
    reads.release.set()
    assert await asyncio.gather(*waiting) == [{"svc": svc("v1")}] * 3
    assert reads.count == 1
    assert await views.current(REF, "app", fresh_for="a") == {"svc": svc("v1")} and reads.count == 1
    views.of(REF).wrote("a")
    reads.result = {"svc": svc("v2")}
    assert await views.current(REF, "app", fresh_for="b") == {"svc": svc("v1")} and reads.count == 1
    assert await views.current(REF, "app", fresh_for="a") == {"svc": svc("v2")} and reads.count == 2


async def test_a_read_started_before_a_write_does_not_count_for_it():
    reads = Reads()
    views = Views(reads, reads.gone.append)
    early = asyncio.ensure_future(views.read(REF, "app"))
    await asyncio.sleep(0)
    views.of(REF).wrote("a")  # finishes while the read is in flight
    later = asyncio.ensure_future(views.current(REF, "app", fresh_for="a"))
    await asyncio.sleep(0)
    reads.release.set()
    await early
    await later
    assert reads.count == 2


async def test_a_gone_app_is_reported_and_forgotten():
    reads = Reads()
    reads.result = None
    reads.release.set()
    views = Views(reads, reads.gone.append)
    views.known_empty(REF)
    with pytest.raises(AppGone):
        await views.read(REF, "app")
    assert reads.gone == [REF] and views.of(REF).services is None


async def test_addresses_held_are_those_the_last_reads_show_and_creates_in_flight():
    reads = Reads()
    reads.release.set()
    views = Views(reads, reads.gone.append)
    reads.result = {"svc": svc("v1", "10.30.70.1")}
    await views.read(REF, "app")
    assert views.addresses() == {"10.30.70.1"}
    assert not views.claim(OTHER, "10.30.70.1")  # held by a project of ours
    assert views.claim(OTHER, "10.30.70.2") and not views.claim(REF, "10.30.70.2")  # claimed by a create
    views.unclaim("10.30.70.2")
    reads.result = {}  # the service vanished (deleted by someone else)
    await views.read(REF, "app")
    assert views.addresses() == set() and views.claim(OTHER, "10.30.70.1")
    views.unclaim("10.30.70.1")
    reads.result = {"svc": svc("v3", "10.30.70.3")}
    await views.read(REF, "app")
    views.dropped(REF, views.of(REF).services["svc"])  # deleted by us
    assert views.addresses() == set()
    reads.result = {"svc": svc("v4", "10.30.70.4")}
    await views.read(REF, "app")
    views.forget(REF)
    assert views.addresses() == set()
