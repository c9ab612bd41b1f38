"""RetryLedger: a Retry-After is a promise the capacity left to the class can keep.

Each test states one property a client honouring Retry-After relies on: the delay accounts for the
classes that will keep going first, promises are spread instead of all returning at once, a burst
with nothing left for a class gets the long honest answer, and a client coming back on time (and
only then) is recognised.
"""

from __future__ import annotations

import pytest

from state.retry_ledger import RetryLedger

CRITICAL, STANDARD, SHEDDABLE = 0, 1, 2


def ledger(max_s: float = 60.0, **kwargs: float) -> RetryLedger:
    return RetryLedger(3, max_s, **kwargs)  # type: ignore[arg-type]


def admit_steadily(book: RetryLedger, rank: int, per_s: float, until_s: float) -> None:
    """Admit ``per_s`` requests of ``rank`` every second for ``until_s`` seconds (rates settle)."""
    for i in range(int(until_s * per_s)):
        book.on_admitted(rank, i / per_s)


def test_the_classes_above_take_their_share_first() -> None:
    book = ledger()
    admit_steadily(book, CRITICAL, 6.0, 100.0)  # critical keeps taking ~6 of the 10 req/s
    now = 100.0
    assert book.leftover_rate_per_s(CRITICAL, 10.0, now) == pytest.approx(10.0)
    assert book.leftover_rate_per_s(STANDARD, 10.0, now) == pytest.approx(4.0, rel=0.05)
    # 3 queued ahead + itself = 4 requests: 0.4 s at the full rate, ~1 s on what critical leaves.
    critical = book.retry_after_s(CRITICAL, 3, 10.0, now, min_s=0.0)
    standard = book.retry_after_s(STANDARD, 3, 10.0, now, min_s=0.0)
    assert critical == pytest.approx(0.4)
    assert standard == pytest.approx(1.0, rel=0.05)


def test_nothing_left_for_a_class_means_the_longest_retry_after_not_a_short_one() -> None:
    book = ledger(max_s=60.0)
    admit_steadily(book, CRITICAL, 4.0, 100.0)
    admit_steadily(book, STANDARD, 6.2, 100.0)  # critical + standard take all of the 10 req/s
    assert book.retry_after_s(SHEDDABLE, 0, 10.0, 100.0, min_s=1.0) == 60.0
    assert book.retry_after_s(STANDARD, 0, 10.0, 100.0, min_s=1.0) < 60.0


def test_promises_are_spread_over_the_capacity_left_not_all_due_together() -> None:
    book = ledger(max_s=60.0)
    admit_steadily(book, CRITICAL, 8.0, 100.0)  # ~2 req/s left to standard
    # Refused standard requests at 4/s for 10 s, every client returning at its Retry-After.
    due: list[tuple[float, str]] = []
    kept = 0
    for i in range(40):
        now = 100.0 + i * 0.25
        book.on_admitted(CRITICAL, now)  # critical keeps coming at 8/s
        book.on_admitted(CRITICAL, now + 0.125)
        for at, tenant in [d for d in due if d[0] <= now]:
            kept += book.redeem(tenant, STANDARD, 1, now)
            due.remove((at, tenant))
        retry_after = book.retry_after_s(STANDARD, 0, 10.0, now, min_s=0.0)
        book.promise(f"t{i}", STANDARD, retry_after, now)
        due.append((now + retry_after, f"t{i}"))
    assert kept > 0
    dues = sorted(at for at, _ in due)
    # More refusals than the 2 req/s left: the later ones are told to come back later, not all at
    # once (the old Retry-After, the queue wait, told each of them ~0.5 s).
    assert dues[-1] - 110.0 > 5.0
    per_second: dict[int, int] = {}
    for at in dues:
        per_second[int(at)] = per_second.get(int(at), 0) + 1
    assert max(per_second.values()) <= 4


def test_promises_that_never_come_back_weigh_less_and_less() -> None:
    book = ledger()
    admit_steadily(book, CRITICAL, 8.0, 100.0)
    now = 100.0
    cold = book.retry_after_s(STANDARD, 0, 10.0, now, min_s=0.0)
    for i in range(200):  # 200 refused clients that never return (no redemption)
        book.promise(f"gone{i}", STANDARD, 5.0, now - 40.0 + i * 0.2)
    assert book.return_ratio(STANDARD, now) < 0.05
    # Booked at face value the 200 would push the next promise to the 60 s maximum.
    assert book.retry_after_s(STANDARD, 0, 10.0, now, min_s=0.0) < 10 * cold


def test_a_client_returning_on_time_redeems_its_promise_once() -> None:
    book = ledger()
    book.promise("acme", STANDARD, 4.0, now_s=10.0)  # due at 14 s, window +/- 2 s
    assert book.booked(STANDARD, 10.0) == pytest.approx(1.0)
    assert not book.redeem("acme", STANDARD, 1, now_s=11.0)  # too early
    assert not book.redeem("other", STANDARD, 1, now_s=14.0)  # someone else's promise
    assert not book.redeem("acme", SHEDDABLE, 1, now_s=14.0)  # another class
    assert not book.redeem("acme", STANDARD, 0, now_s=14.0)  # says it is a first attempt
    assert book.redeem("acme", STANDARD, 1, now_s=14.5)
    assert book.booked(STANDARD, 14.5) == pytest.approx(0.0)  # its slot is no longer booked
    assert not book.redeem("acme", STANDARD, 1, now_s=14.6)  # a promise is kept once


def test_a_client_without_a_retry_counter_cannot_be_told_from_a_fresh_request() -> None:
    book = ledger()
    book.promise("acme", STANDARD, 4.0, now_s=10.0)
    assert not book.redeem("acme", STANDARD, None, now_s=14.0)
    assert book.redeem("acme", STANDARD, 2, now_s=14.0)  # the promise is still there for the retry


def test_a_late_return_finds_its_promise_expired() -> None:
    book = ledger()
    book.promise("acme", STANDARD, 4.0, now_s=10.0)
    assert not book.redeem("acme", STANDARD, 1, now_s=20.0)
    assert book.redeemable() == 0


def test_memory_is_bounded() -> None:
    book = ledger(max_s=10.0, max_promises=50)
    for i in range(1_000):
        book.promise(f"t{i}", SHEDDABLE, 10.0, now_s=i * 0.01)
    assert book.redeemable() <= 50
    assert len(book._buckets[SHEDDABLE]) <= 10 + 1
    # Still booked in the ledger (expected returns), just not redeemable.
    assert book.booked(SHEDDABLE, 10.0) > 50 * book.return_ratio(SHEDDABLE, 10.0)


def test_cold_start_without_a_service_rate_answers_the_minimum() -> None:
    assert ledger().retry_after_s(STANDARD, 100, 0.0, 0.0, min_s=1.0) == 1.0
