"""The one back-off every retry uses (pure logic: sleeps are recorded, not slept)."""

from __future__ import annotations

import pytest

from repo2docker_buildcore.backoff import Backoff, retry

pytestmark = pytest.mark.unit


def test_delays_in_turn_the_last_repeating_and_reset_starts_over():
    backoff = Backoff.doubling(1.0, 10.0)
    assert [backoff.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    backoff.reset()
    assert backoff.next() == 1.0
    assert Backoff.doubling(5.0, 2.0).delays == (2.0,)


async def test_retry_returns_the_first_answer_and_tells_each_wait():
    answers, slept, told = [OSError("down"), OSError("still down"), "up"], [], []

    async def attempt():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(delay):
        slept.append(delay)

    result = await retry(
        attempt,
        retry_on=OSError,
        backoff=Backoff((2.0, 4.0)),
        sleep=sleep,
        on_retry=lambda exc, delay: told.append((str(exc), delay)),
    )
    assert (result, slept, told) == ("up", [2.0, 4.0], [("down", 2.0), ("still down", 4.0)])


async def test_retry_gives_up_past_its_time_and_never_retries_other_errors():
    slept = []

    async def sleep(delay):
        slept.append(delay)

    async def down():
        raise OSError("down")

    with pytest.raises(OSError):
        await retry(down, retry_on=OSError, backoff=Backoff((2.0, 4.0)), within=7.0, sleep=sleep)
    assert slept == [2.0, 4.0]  # a third wait (4 s) would pass 7 s

    async def broken():
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await retry(broken, retry_on=OSError, backoff=Backoff((1.0,)), sleep=sleep)
    assert slept == [2.0, 4.0]
