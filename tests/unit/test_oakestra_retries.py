"""attempts(): a plain first try, then tenacity's backoff for the rest; the count is the count."""

import pytest

from flops_operator.platforms.oakestra.retries import attempts


class Flaky(Exception):
    pass


def failing(times: int, error: type[Exception] = Flaky):
    calls = []

    async def step():
        calls.append(1)
        if len(calls) <= times:
            raise error(f"failure {len(calls)}")
        return len(calls)
    return step, calls


@pytest.mark.parametrize("fails, tries, result", [(0, 1, 1), (0, 4, 1), (2, 4, 3), (3, 4, 4)])
async def test_succeeds_within_the_tries(fails, tries, result):
    step, _ = failing(fails)
    assert await attempts(step, tries=tries, retry_on=(Flaky,), initial=0.001, maximum=0.002) == result


@pytest.mark.parametrize("tries", [1, 3])
async def test_the_last_error_is_raised_after_exactly_the_tries(tries):
    step, calls = failing(10)
    with pytest.raises(Flaky, match=f"failure {tries}"):
        await attempts(step, tries=tries, retry_on=(Flaky,), initial=0.001, maximum=0.002)
    assert len(calls) == tries


async def test_other_errors_are_not_retried():
    step, calls = failing(1, ValueError)
    with pytest.raises(ValueError):
        await attempts(step, tries=4, retry_on=(Flaky,), initial=0.001, maximum=0.002)
    assert len(calls) == 1
