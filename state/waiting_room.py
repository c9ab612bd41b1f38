"""The proxy-side waiting room: per-class FIFO queues with deadlines, as a plain data structure.

No asyncio and no clock of its own: the data plane wraps it with futures,
and the virtual-time simulator drives it from its event loop, so both queue
exactly alike.

* Classes are ranks (0 = most important). ``pop_dispatchable`` serves the
  most important class first, FIFO within a class, or newest first in the ranks
  from ``lifo_from_rank`` on; an entry whose model has no free backend is skipped
  (no head-of-line blocking across models).
* When the room is full, a newcomer may evict the newest entry of a strictly
  less important class (that entry is shed by the caller); otherwise the
  newcomer is refused. Sheddable work therefore leaves before standard work,
  and standard before critical.
* ``remove`` (client gave up) and expiry are O(log n) via lazy deletion.
* ``ahead_of(rank)`` gives the requests and predicted tokens queued at that
  rank or better: the work a new request of that rank would wait behind.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class Waiter(Generic[T]):
    item: T
    rank: int
    deadline_s: float
    enqueued_s: float
    work_tokens: float
    seq: int
    live: bool = field(default=True)


@dataclass(frozen=True, slots=True)
class PushResult(Generic[T]):
    waiter: Waiter[T] | None
    evicted: tuple[Waiter[T], ...] = ()

    @property
    def accepted(self) -> bool:
        return self.waiter is not None


class WaitingRoom(Generic[T]):
    def __init__(self, n_ranks: int, max_requests: int, lifo_from_rank: int | None = None) -> None:
        """``lifo_from_rank``: ranks from this one on are served newest first (adaptive LIFO: a queue
        that only fills at overload then serves the requests that can still meet their SLO, and the old
        ones leave at their deadline); None: every rank FIFO."""
        if n_ranks < 1:
            raise ValueError("need at least one class")
        self._lifo_from = n_ranks if lifo_from_rank is None else lifo_from_rank
        self._queues: list[deque[Waiter[T]]] = [deque() for _ in range(n_ranks)]
        self._count_by_rank = [0] * n_ranks
        self._tokens_by_rank = [0.0] * n_ranks
        self._deadlines: list[tuple[float, int, Waiter[T]]] = []
        self._max_requests = max_requests
        self._seq = itertools.count()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def n_ranks(self) -> int:
        return len(self._queues)

    def count(self, rank: int) -> int:
        return self._count_by_rank[rank]

    def ahead_of(self, rank: int) -> tuple[int, float]:
        """(requests, predicted tokens) queued at ``rank`` or more important."""
        return sum(self._count_by_rank[: rank + 1]), sum(self._tokens_by_rank[: rank + 1])

    def can_accept(self, rank: int) -> bool:
        """Whether ``push`` at ``rank`` would be accepted now (possibly by evicting a lower class)."""
        return self._size < self._max_requests or any(self._count_by_rank[rank + 1 :])

    def push(self, item: T, rank: int, deadline_s: float, now_s: float, work_tokens: float) -> PushResult[T]:
        evicted: list[Waiter[T]] = []
        if self._size >= self._max_requests:
            victim = self._newest_below(rank)
            if victim is None:
                return PushResult(None)
            self._drop(victim)
            evicted.append(victim)
        waiter = Waiter(item, rank, deadline_s, now_s, work_tokens, next(self._seq))
        queue = self._queues[rank]
        if len(queue) > 2 * self._count_by_rank[rank] + 64:
            # Entries removed from the middle stay as tombstones until they reach the head;
            # compact when they dominate so a stuck queue cannot grow without bound.
            self._queues[rank] = queue = deque(w for w in queue if w.live)
        queue.append(waiter)
        self._count_by_rank[rank] += 1
        self._tokens_by_rank[rank] += work_tokens
        self._size += 1
        heapq.heappush(self._deadlines, (deadline_s, waiter.seq, waiter))
        return PushResult(waiter, tuple(evicted))

    def _newest_below(self, rank: int) -> Waiter[T] | None:
        for lower in range(self.n_ranks - 1, rank, -1):
            queue = self._queues[lower]
            while queue and not queue[-1].live:
                queue.pop()
            if queue:
                return queue[-1]
        return None

    def _drop(self, waiter: Waiter[T]) -> None:
        waiter.live = False
        self._count_by_rank[waiter.rank] -= 1
        self._tokens_by_rank[waiter.rank] -= waiter.work_tokens
        self._size -= 1

    def remove(self, waiter: Waiter[T]) -> bool:
        """Take ``waiter`` out (its client left); False if it was already gone."""
        if not waiter.live:
            return False
        self._drop(waiter)
        return True

    def expire(self, now_s: float) -> list[Waiter[T]]:
        """Remove and return every live entry whose deadline has passed."""
        expired: list[Waiter[T]] = []
        while self._deadlines and self._deadlines[0][0] <= now_s:
            _, _, waiter = heapq.heappop(self._deadlines)
            if waiter.live:
                self._drop(waiter)
                expired.append(waiter)
        if not self._size:
            self._deadlines.clear()
        return expired

    def next_deadline_s(self) -> float | None:
        while self._deadlines and not self._deadlines[0][2].live:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def pop_dispatchable(self, can_dispatch: Callable[[T], bool]) -> Waiter[T] | None:
        """The first live entry, most important class first (FIFO, or newest first from
        ``lifo_from_rank`` on), whose item ``can_dispatch``."""
        for rank, queue in enumerate(self._queues):
            while queue and not queue[0].live:
                queue.popleft()
            for waiter in reversed(queue) if rank >= self._lifo_from else queue:
                if waiter.live and can_dispatch(waiter.item):
                    queue.remove(waiter)
                    self._drop(waiter)
                    return waiter
        return None

    def oldest_enqueued_s(self) -> float | None:
        oldest: float | None = None
        for queue in self._queues:
            for waiter in queue:
                if waiter.live:
                    if oldest is None or waiter.enqueued_s < oldest:
                        oldest = waiter.enqueued_s
                    break
        return oldest
