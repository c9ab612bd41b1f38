"""Retry-After as a promise: class-aware, capacity-ledgered, redeemable.

Why not "work queued ahead / service rate" (Little's law) alone: in a sustained burst new arrivals of
the more important classes keep coming, so a standard or sheddable request that returns when the queue
it saw has drained finds a new queue and is refused again (measured: 26-31 % of served retries on
time, waiting 2.2-3.0 x their first Retry-After). A Retry-After here is the time at which the capacity
*left to the request's class* covers the work ahead of it, and the returns it promised are booked so
that two refused requests are not both told "come back in 2 s" for one free slot:

* **Leftover capacity** of class ``c`` = fleet service rate mu minus the decayed admitted rate of the
  classes more important than ``c`` (what they will keep taking first). ~0 in a sustained burst of the
  classes above: the honest answer is then the longest Retry-After (``max_s``), not a short one that
  will be refused again. mu is measured at completions, which lag admissions by a whole E2E: at the
  start of a burst the admitted rates rise seconds before mu does, and "mu minus what critical takes"
  read 0 for standard for 10 s (every standard Retry-After 60 s). So the capacity is the larger of mu
  and the total admitted rate, both of which are then measured at admission.
* **Work ahead** = requests queued at ``c`` or better + 1 (itself) + the returns already promised to
  class ``c`` that come due before it (a per-class ledger of ``bucket_s`` buckets up to ``max_s`` ahead,
  so retries are spread out instead of returning together).
* **Expected returns, not promises.** Most refused clients never come back (a browser user gives up, a
  batch job fails over); booking every promise at face value would push every Retry-After to the
  maximum. Each promise is booked at the class's measured return ratio: decayed promises redeemed /
  promises made, with one redeemed promise as the prior. The ratio lags (a promise made now is
  redeemed a Retry-After later), so while promises grow it is low and errs towards shorter
  Retry-Afters (some returns refused again). Counting only promises come due instead (no lag) ran away
  in a sudden burst: nothing has come due, every promise weighs 1, every Retry-After grows to the
  maximum before the first one can be redeemed (measured: median Retry-After 60 s in the 3x burst).
* **Redeeming.** A request of the same tenant and class that arrives within ``redeem_window_frac`` x R
  of a promise's due time (R its Retry-After) redeems it: the caller queues it ahead of fresh requests
  of its class, so the capacity promised to it is its own. The openai client sends
  ``x-stainless-retry-count`` (0 on a first attempt) and never echoes custom headers, so (tenant,
  class) and that counter are all a return can be recognised by: only a count > 0 redeems. A client
  without the header cannot be told from a fresh request of its tenant; matching it by (tenant, class)
  alone let every fresh request of a busy tenant take a returning one's place and the reserve of the
  class above, and critical goodput fell (``tests/unit/test_overload_virtual.py``: 84 % of critical
  requests within the SLO, under its 85 % floor). Such clients still get the class-aware, ledgered
  Retry-After; they just queue as fresh requests when they return.

Memory is bounded: ``max_s / bucket_s + 1`` buckets per class and at most ``max_promises`` redeemable
promises (beyond it a promise is still booked in the ledger, just not redeemable). Pure: no clock of
its own, ``now_s`` is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from state.service_rate import ServiceRate

DEFAULT_BUCKET_S = 1.0
DEFAULT_REDEEM_WINDOW_FRAC = 0.5
DEFAULT_MAX_PROMISES = 10_000
# Admitted arrivals per class react like the fleet service rate (same time constant), so that their
# difference is measured over the same past.
DEFAULT_ARRIVAL_TAU_S = 10.0
# Redemptions lag their promises by the Retry-After itself (up to max_s): a longer memory.
DEFAULT_REDEMPTION_TAU_S = 30.0
# Returns may take at most this share of a class's leftover capacity in any second; the rest stays for
# the class's fresh arrivals.
DEFAULT_RETURN_SHARE = 0.5
# A leftover below this share of the service rate is "none left": the class waits out the burst.
MIN_LEFTOVER_FRAC = 0.01


@dataclass(frozen=True, slots=True)
class Promise:
    due_s: float
    retry_after_s: float
    weight: float
    bucket: int


class RetryLedger:
    def __init__(
        self,
        n_classes: int,
        max_s: float,
        bucket_s: float = DEFAULT_BUCKET_S,
        redeem_window_frac: float = DEFAULT_REDEEM_WINDOW_FRAC,
        max_promises: int = DEFAULT_MAX_PROMISES,
        arrival_tau_s: float = DEFAULT_ARRIVAL_TAU_S,
        redemption_tau_s: float = DEFAULT_REDEMPTION_TAU_S,
        return_share: float = DEFAULT_RETURN_SHARE,
    ) -> None:
        if n_classes < 1 or max_s <= 0 or bucket_s <= 0 or max_promises < 0:
            raise ValueError("need n_classes >= 1, max_s > 0, bucket_s > 0, max_promises >= 0")
        self._n = n_classes
        self._max_s = max_s
        self._bucket_s = bucket_s
        self._window_frac = redeem_window_frac
        self._max_promises = max_promises
        self._return_share = return_share
        self._admitted = [ServiceRate(arrival_tau_s) for _ in range(n_classes)]
        self._promised = [ServiceRate(redemption_tau_s) for _ in range(n_classes)]
        self._redeemed = [ServiceRate(redemption_tau_s) for _ in range(n_classes)]
        self._prior = 1.0 / redemption_tau_s  # one redeemed promise, as a decayed rate
        # Per class: bucket index (floor(due_s / bucket_s)) -> expected returns due in it.
        self._buckets: list[dict[int, float]] = [{} for _ in range(n_classes)]
        self._promises: dict[tuple[str, int], list[Promise]] = {}
        self._n_promises = 0

    # ---- measurements -------------------------------------------------------------------
    def on_admitted(self, rank: int, now_s: float) -> None:
        """A request of class ``rank`` went to a backend (admitted at once or woken from the queue)."""
        self._admitted[rank].record(now_s)

    def admitted_rate_per_s(self, rank: int, now_s: float) -> float:
        return self._admitted[rank].rate_per_s(now_s)

    def leftover_rate_per_s(self, rank: int, service_rate_per_s: float, now_s: float) -> float:
        """Capacity (service rate, or the admitted rate if higher) not taken by the classes more
        important than ``rank`` (never below 0)."""
        rates = [a.rate_per_s(now_s) for a in self._admitted]
        capacity = max(service_rate_per_s, sum(rates))
        return max(0.0, capacity - sum(rates[:rank]))

    def return_ratio(self, rank: int, now_s: float) -> float:
        """Decayed share of class ``rank``'s promises that were redeemed; 1 before any promise."""
        promised = self._promised[rank].rate_per_s(now_s)
        redeemed = self._redeemed[rank].rate_per_s(now_s)
        return min(1.0, (redeemed + self._prior) / (promised + self._prior))

    def booked(self, rank: int, now_s: float) -> float:
        """Expected returns of class ``rank`` still to come (introspection, tests)."""
        self._prune_buckets(rank, now_s)
        return sum(self._buckets[rank].values())

    # ---- the Retry-After ------------------------------------------------------------------
    def retry_after_s(
        self, rank: int, queued_ahead: int, service_rate_per_s: float, now_s: float, min_s: float
    ) -> float:
        """When the leftover capacity of class ``rank`` covers the work ahead of a request refused now,
        in ``[min_s, max_s]``. While the service rate is unknown (cold start) ``min_s``."""
        if service_rate_per_s <= 0:
            return self._clamp(min_s, min_s)
        leftover = self.leftover_rate_per_s(rank, service_rate_per_s, now_s)
        if leftover < MIN_LEFTOVER_FRAC * service_rate_per_s:
            return self._max_s
        self._prune_buckets(rank, now_s)
        book = self._buckets[rank]
        work = float(queued_ahead + 1)
        first = math.floor(now_s / self._bucket_s)
        last = math.floor((now_s + self._max_s) / self._bucket_s)
        if book:
            for bucket in range(first, last + 1):
                work += book.get(bucket, 0.0) / self._return_share
                wait_s = work / leftover
                if now_s + wait_s < (bucket + 1) * self._bucket_s:
                    return self._clamp(wait_s, min_s)
            return self._max_s
        return self._clamp(work / leftover, min_s)

    def _clamp(self, wait_s: float, min_s: float) -> float:
        return min(self._max_s, max(min_s, wait_s))

    def _prune_buckets(self, rank: int, now_s: float) -> None:
        """Drop the buckets in the past."""
        book = self._buckets[rank]
        if not book:
            return
        first = math.floor(now_s / self._bucket_s)
        for bucket in [b for b in book if b < first]:
            del book[bucket]

    # ---- promises -----------------------------------------------------------------------
    def promise(self, tenant: str, rank: int, retry_after_s: float, now_s: float) -> None:
        """Book a 429 with this Retry-After: its expected return in the ledger, redeemable by the tenant."""
        due_s = now_s + retry_after_s
        bucket = math.floor(due_s / self._bucket_s)
        weight = self.return_ratio(rank, now_s)
        self._promised[rank].record(now_s)
        self._prune_buckets(rank, now_s)
        book = self._buckets[rank]
        book[bucket] = book.get(bucket, 0.0) + weight
        if self._n_promises >= self._max_promises:
            self._sweep(now_s)
            if self._n_promises >= self._max_promises:
                return
        key = (tenant, rank)
        self._promises.setdefault(key, []).append(Promise(due_s, retry_after_s, weight, bucket))
        self._n_promises += 1

    def redeem(self, tenant: str, rank: int, client_retry_count: int | None, now_s: float) -> bool:
        """Whether this request is a return keeping a promise made to its tenant and class (and if so,
        take the promise off the books). Only a client that says it is retrying (count > 0) is."""
        if client_retry_count is None or client_retry_count <= 0:
            return False
        key = (tenant, rank)
        promises = self._promises.get(key)
        if not promises:
            return False
        best: int | None = None
        for i, p in enumerate(promises):
            window_s = max(self._bucket_s, self._window_frac * p.retry_after_s)
            if abs(now_s - p.due_s) <= window_s and (best is None or p.due_s < promises[best].due_s):
                best = i
        live = [p for p in promises if now_s <= p.due_s + self._expiry_s(p)]
        if best is None:
            self._replace(key, live)
            return False
        kept = promises[best]
        self._replace(key, [p for p in live if p is not kept])
        self._redeemed[rank].record(now_s)
        book = self._buckets[rank]
        left = book.get(kept.bucket, 0.0) - kept.weight
        if kept.bucket in book:
            if left > 1e-9:
                book[kept.bucket] = left
            else:
                del book[kept.bucket]
        return True

    def _expiry_s(self, p: Promise) -> float:
        return max(self._bucket_s, self._window_frac * p.retry_after_s)

    def _replace(self, key: tuple[str, int], kept: list[Promise]) -> None:
        before = len(self._promises.get(key, ()))
        if kept:
            self._promises[key] = kept
        else:
            self._promises.pop(key, None)
        self._n_promises += len(kept) - before

    def _sweep(self, now_s: float) -> None:
        """Forget every promise past its redeem window."""
        for key in list(self._promises):
            self._replace(key, [p for p in self._promises[key] if now_s <= p.due_s + self._expiry_s(p)])

    def redeemable(self) -> int:
        return self._n_promises
