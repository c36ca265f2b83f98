"""``poolwatch.sizing``: the pool-size formula, its arithmetic and its refusals, on plain inputs."""

from __future__ import annotations

import pytest

from poolwatch.sizing import SizingError, SizingInput, recommend


def test_the_formula_shares_usable_connections_between_workers() -> None:
    advice = recommend(SizingInput(max_connections=200, reserved=10, workers=4, max_overflow=5))
    # floor((200 - 10) / 4) - 5 = 47 - 5 = 42
    assert advice.pool_size == 42
    assert advice.formula == "floor((200 - 10) / 4) - 5 = 47 - 5 = 42"
    assert (advice.usable, advice.per_worker_peak, advice.peak_total) == (190, 47, 188)
    assert advice.headroom == 190 - 188
    assert "pool_size=42," in advice.snippet and "max_overflow=5," in advice.snippet
    assert advice.as_dict()["pool_size"] == 42


def test_eight_workers_leave_a_smaller_pool_and_no_rounding_note() -> None:
    advice = recommend(SizingInput(max_connections=200, reserved=10, workers=8, max_overflow=5))
    assert (advice.pool_size, advice.peak_total, advice.headroom) == (18, 184, 6)
    assert not any("rounding down" in note for note in advice.notes)  # 18 < 20


def test_a_large_pool_gets_the_rounding_note_and_few_reserved_slots_a_warning() -> None:
    advice = recommend(SizingInput(max_connections=100, reserved=3, workers=1, max_overflow=0))
    assert advice.pool_size == 97
    assert any("pool_size=95" in note for note in advice.notes)
    assert any("only 3 slots reserved" in note for note in advice.notes)


def test_session_mode_sizes_like_a_server_and_says_so() -> None:
    inp = SizingInput(
        max_connections=50, reserved=10, workers=2, max_overflow=2, pgbouncer="session"
    )
    advice = recommend(inp)
    assert advice.pool_size == 18
    assert any("session mode" in note for note in advice.notes)


def test_transaction_mode_sizes_client_and_server_sides_separately() -> None:
    inp = SizingInput(
        max_connections=100, reserved=10, workers=4, max_overflow=0,
        pgbouncer="transaction", concurrency=50, pgbouncer_pools=3,
    )  # fmt: skip
    advice = recommend(inp)
    assert advice.mode == "transaction"
    assert advice.pool_size == 50  # the coroutine concurrency, PgBouncer multiplexes it
    assert advice.peak_total == 200
    assert advice.pgbouncer_max_client_conn == 236  # ceil(200 / 0.85)
    assert advice.pgbouncer_default_pool_size == 30  # floor(90 / 3)
    assert advice.headroom == 36
    assert "statement_cache_size" in advice.snippet


@pytest.mark.parametrize(
    ("inp", "words"),
    [
        (SizingInput(100, 10, 100, 5), "use at most 90 workers"),
        (SizingInput(100, 10, 10, 9), "lower --max-overflow to at most 8"),
        (SizingInput(100, 100, 1, 0), "--reserved (100) must be below max_connections"),
        (SizingInput(0, 0, 1, 0), "max_connections must be at least 1"),
        (SizingInput(100, 10, 0, 0), "--workers must be at least 1"),
        (SizingInput(100, 10, 1, -1), "--max-overflow cannot be negative"),
        (SizingInput(100, 10, 1, 0, pool_timeout=float("nan")), "--pool-timeout must be positive"),
        (SizingInput(100, 10, 1, 0, pool_recycle=0), "--pool-recycle must be -1 (off)"),
        (SizingInput(100, 10, 1, 0, pgbouncer="statement"), "--pgbouncer must be one of"),
        (
            SizingInput(10, 5, 1, 0, pgbouncer="transaction", pgbouncer_pools=6),
            "6 PgBouncer pools cannot each get a server connection out of 5",
        ),
    ],
)
def test_unusable_input_is_one_line_that_says_what_to_change(inp: SizingInput, words: str) -> None:
    with pytest.raises(SizingError) as raised:
        recommend(inp)
    message = str(raised.value)
    assert words in message, message
    assert "\n" not in message
