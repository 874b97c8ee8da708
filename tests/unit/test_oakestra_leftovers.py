"""What is left of a deleted project, found by name; one listing of every job shared fairly."""

import asyncio

import pytest

from flops_operator.models import ProjectRef
from flops_operator.platforms.oakestra import leftovers, names

REF = ProjectRef("team-a", "digits", "0d4b9a52-1111-4222-8333-444455556666")
OTHER = ProjectRef("team-a", "digits", "another-uid")


def job(project, service, **extra):
    return {"app_name": names.app_name(project), "app_ns": names.app_namespace(project),
            "microservice_name": names.service_name(service), "microserviceID": f"id-{service}",
            "RR_ip": "10.30.70.7", "flops_operator": {"service": service, "spec_hash": "h"}, **extra}


@pytest.mark.parametrize("jobs, found", [
    ([], []),
    ([job(REF, "aggregator")], ["aggregator"]),
    ([job(OTHER, "aggregator"), job(REF, "learner-1")], ["learner-1"]),  # same name, other uid: not ours
    ([{**job(REF, "x"), "app_ns": "elsewhere"}], []),
])
def test_of_project_goes_by_the_applications_name_and_namespace(jobs, found):
    assert [j["flops_operator"]["service"] for j in leftovers.of_project(REF, jobs)] == found


def test_describe_names_service_job_and_address_and_what_to_do():
    text = leftovers.describe(REF, [job(REF, "learner-1"), {"microservice_name": "foreign"}])
    assert "learner-1 (job id-learner-1, address 10.30.70.7)" in text and "foreign (job ?, address none)" in text
    assert "deletionPolicy: Orphan" in text and text.startswith("Oakestra still has 2 service(s) of team-a/digits")


async def test_a_listing_is_shared_only_by_callers_whose_deletes_were_over_when_it_started():
    started, release = [], asyncio.Event()

    async def fetch():
        started.append(len(started))
        await release.wait()
        return [{"n": len(started)}]

    listing = leftovers.JobListing(fetch)
    first = asyncio.ensure_future(listing.after_deletes())
    second = asyncio.ensure_future(listing.after_deletes())  # same deletes done: shares the first listing
    await asyncio.sleep(0)
    listing.deletes += 1  # a delete finishing now needs a listing that starts after it
    third = asyncio.ensure_future(listing.after_deletes())
    await asyncio.sleep(0)
    release.set()
    assert await first == await second == [{"n": 1}]
    assert await third == [{"n": 2}] and started == [0, 1]


async def test_a_refused_listing_is_not_asked_for_again():
    calls = []

    async def fetch():
        calls.append(1)
        return None

    listing = leftovers.JobListing(fetch)
    assert await listing.after_deletes() is None
    listing.deletes += 1
    assert await listing.after_deletes() is None and calls == [1]
