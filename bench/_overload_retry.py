"""Retrying clients in virtual time: after a 429 they wait ``Retry-After`` and send the request again.

The virtual fleet pulls its workload lazily, one arrival ahead, so a retry can be merged into the
stream: when the fleet asks for its next arrival, every retrying request refused since the last pull
gets a new attempt at ``refused at + Retry-After`` (up to ``max_retries``), and the stream yields
base requests and retries in time order. An attempt is a new request id (``<id>~<n>``) in the fleet;
``join`` folds each chain back into one client-side record with the real client's fields
(``attempts``, ``retry_wait_ms``, ``first_retry_after_s``), so ``retry_after_accuracy`` scores both
the same way.

Like the openai client (and ``loadgen.client``), every attempt carries ``x-stainless-retry-count``
(0 on the first), the delay used is the precise one (``retry-after-ms``), and a delay outside
(0, 120] s is not waited out (``loadgen.client.honoured_retry_after``).

A retry is due at least one second after its refusal (Retry-After is whole seconds >= 1) while the
fleet has already pulled at most one base arrival ahead; a retry due before that arrival (possible
only when arrivals are more than a second apart) is sent at that arrival's time instead.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import replace

from core import headers
from loadgen.client import honoured_retry_after
from loadgen.records import Outcome, RequestRecord
from loadgen.sim.virtual import VirtualFleet
from loadgen.workload import WorkloadRequest

SEP = "~"


class RetryingStream:
    def __init__(
        self, vf: VirtualFleet, base: Iterable[WorkloadRequest], tenant: str, max_retries: int
    ) -> None:
        self._vf = vf
        self._base = iter(base)
        self._tenant = tenant
        self._max_retries = max_retries
        self._seen_records = 0
        self._by_id: dict[str, WorkloadRequest] = {}
        self._due: list[tuple[float, int, WorkloadRequest]] = []
        self._seq = 0
        self._last_s = 0.0
        self._next_base = next(self._base, None)

    def _collect_refusals(self) -> None:
        records = self._vf._records  # the fleet's finished requests, in finish order
        for record in records[self._seen_records :]:
            wr = self._by_id.get(record.request_id)
            if wr is None or record.status != 429 or not honoured_retry_after(record.retry_after_s):
                continue
            assert record.retry_after_s is not None
            root, _, n = record.request_id.partition(SEP)
            attempt = int(n) if n else 0
            if attempt >= self._max_retries:
                continue
            at_s = record.sent_s + (record.e2e_s or 0.0) + record.retry_after_s
            retry = replace(
                wr,
                request_id=f"{root}{SEP}{attempt + 1}",
                arrival_s=at_s,
                extra_headers={**wr.extra_headers, headers.CLIENT_RETRY_COUNT: str(attempt + 1)},
            )
            self._seq += 1
            heapq.heappush(self._due, (at_s, self._seq, retry))
        self._seen_records = len(records)

    def __iter__(self) -> Iterator[WorkloadRequest]:
        return self

    def __next__(self) -> WorkloadRequest:
        self._collect_refusals()
        base = self._next_base
        if self._due and (base is None or self._due[0][0] <= base.arrival_s):
            _, _, wr = heapq.heappop(self._due)
            wr = replace(wr, arrival_s=max(wr.arrival_s, self._last_s))
        elif base is not None:
            wr = replace(base, extra_headers={**base.extra_headers, headers.CLIENT_RETRY_COUNT: "0"})
            self._next_base = next(self._base, None)
        else:
            raise StopIteration
        self._last_s = wr.arrival_s
        if wr.tenant == self._tenant:
            self._by_id[wr.request_id] = wr
        return wr


def join(records: Iterable[RequestRecord], tenant: str) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """(records of everyone else, one record per retrying client's request with its whole history)."""
    others: list[RequestRecord] = []
    chains: dict[str, list[RequestRecord]] = {}
    for record in records:
        if record.tenant != tenant:
            others.append(record)
            continue
        root = record.request_id.partition(SEP)[0]
        chains.setdefault(root, []).append(record)
    joined = []
    for root, chain in chains.items():
        chain.sort(key=lambda r: r.scheduled_s)
        first, last = chain[0], chain[-1]
        waited_s = sum(
            nxt.scheduled_s - (prev.scheduled_s + (prev.e2e_ms or 0.0) / 1000.0)
            for prev, nxt in itertools.pairwise(chain)
        )
        out = replace(last, request_id=root, scheduled_s=first.scheduled_s, sent_s=first.sent_s)
        out.attempts = len(chain)
        out.retry_wait_ms = waited_s * 1000.0
        out.first_retry_after_s = first.retry_after_s if first.outcome is Outcome.SHED else None
        joined.append(out)
    return others, joined
