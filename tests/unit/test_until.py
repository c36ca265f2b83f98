"""The tests' one polling helper (tests/support.py ``until`` / ``until_async``) fails by itself,
saying what it waited for and the last value or exception it saw."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from support import until, until_async


def test_until_returns_the_first_value_that_holds() -> None:
    counter = itertools.count()
    assert until(lambda: next(counter), equals=3, interval=0, what="3") == 3
    assert until(lambda: [1], what="a non-empty list") == [1]
    assert until(lambda: {"n": 2}, holds=lambda d: d["n"] == 2, what="n = 2") == {"n": 2}


def test_until_fails_with_what_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as raised:
        until(lambda: 3, equals=4, timeout=0, what="the answer")
    assert str(raised.value) == (
        "timed out after 0 s waiting for the answer (want 4); last value: 3"
    )


def test_until_remembers_a_caught_exception_and_lets_others_through() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("nobody listens")

    with pytest.raises(AssertionError, match="last exception: ConnectionRefusedError: nobody"):
        until(refused, timeout=0, catch=(OSError,), what="a listener")
    with pytest.raises(ConnectionRefusedError):
        until(refused, timeout=0, what="a listener")


def test_until_async_awaits_an_async_check_and_fails_the_same_way() -> None:
    async def main() -> None:
        async def half() -> float:
            return 0.5

        assert await until_async(half, what="0.5") == 0.5
        with pytest.raises(AssertionError, match=r"want 1\); last value: 0.5$"):
            await until_async(half, equals=1, timeout=0, what="1")

    asyncio.run(main())
