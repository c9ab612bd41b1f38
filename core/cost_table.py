"""``CostTable``: one request's predicted cost on every backend, as columns, built into objects lazily.

Why: a 64-backend fleet needs 64 predicted costs per request (admission reads
the best TTFT over all of them), but routing then looks closely at only the
dozen candidates that survive sampling, and the decision keeps one. Building
64 frozen ``BackendCostEstimate`` objects per request cost more than the whole
rest of the decision. The predictor computes the numbers column-wise
(``predictors.cost_columns``); this mapping hands out plain floats through
``ttft_tpot`` (the hot path of filters and scorers) and builds a
``BackendCostEstimate`` only when one is read through the ``Mapping``
interface (then memoised, so repeated reads return the same object).

Values are exactly those of the per-backend formula (the same float
operations in the same order); ``e2e_ms = ttft_ms + decode_steps·tpot_ms``
and ``cached_prompt_tokens = min(matched, prompt)`` are derived on access.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, SupportsFloat

from core.types import BackendCostEstimate, BackendId


class FloatColumn(Protocol):
    """A column read by position: a list of floats or a numpy array (no numpy import in core)."""

    def __getitem__(self, i: int, /) -> SupportsFloat: ...


class CostTable(Mapping[BackendId, BackendCostEstimate]):
    """Read-only ``backend id -> BackendCostEstimate`` over per-backend columns (see module docstring)."""

    __slots__ = (
        "_built",
        "_decode_steps",
        "_ids",
        "_matched",
        "_position",
        "_prefill_ms",
        "_prompt_tokens",
        "_queue_ms",
        "_tpot_ms",
        "_ttft_ms",
        "best_ttft_ms",
    )

    def __init__(
        self,
        ids: Sequence[BackendId],
        position: Mapping[BackendId, int],
        queue_ms: FloatColumn,
        prefill_ms: FloatColumn,
        ttft_ms: Sequence[float],
        tpot_ms: Sequence[float],
        *,
        prompt_tokens: int,
        matched_tokens: Mapping[BackendId, int],
        decode_steps: float,
        best_ttft_ms: float | None,
    ) -> None:
        self._ids = ids
        self._position = position
        self._queue_ms = queue_ms
        self._prefill_ms = prefill_ms
        self._ttft_ms = ttft_ms
        self._tpot_ms = tpot_ms
        self._prompt_tokens = prompt_tokens
        self._matched = matched_tokens
        self._decode_steps = decode_steps
        self._built: dict[BackendId, BackendCostEstimate] = {}
        self.best_ttft_ms = best_ttft_ms
        """The lowest predicted TTFT over the table (None when empty): admission's input."""

    def ttft_tpot(self, backend_id: BackendId) -> tuple[float, float] | None:
        """``(ttft_ms, tpot_ms)`` without building an estimate object; None if the backend is absent."""
        i = self._position.get(backend_id)
        if i is None:
            return None
        return self._ttft_ms[i], self._tpot_ms[i]

    def ttft_e2e(self, backend_id: BackendId) -> tuple[float, float] | None:
        """``(ttft_ms, e2e_ms)`` of the estimate ``self[backend_id]`` would build, without building it.

        Why: every routing decision reports its chosen backend's predicted TTFT and E2E, and
        building a ``BackendCostEstimate`` for two floats cost more than the rest of picking a
        backend on a small fleet. The same expressions as ``__getitem__``, so the same floats.
        """
        i = self._position.get(backend_id)
        if i is None:
            return None
        ttft_ms = self._ttft_ms[i]
        return ttft_ms, ttft_ms + self._decode_steps * self._tpot_ms[i]

    def __getitem__(self, backend_id: BackendId) -> BackendCostEstimate:
        built = self._built.get(backend_id)
        if built is not None:
            return built
        i = self._position[backend_id]
        ttft_ms = self._ttft_ms[i]
        tpot_ms = self._tpot_ms[i]
        matched = self._matched.get(backend_id, 0)
        prompt = self._prompt_tokens
        built = self._built[backend_id] = BackendCostEstimate(
            backend_id=backend_id,
            queue_wait_ms=float(self._queue_ms[i]),
            prefill_ms=float(self._prefill_ms[i]),
            ttft_ms=ttft_ms,
            tpot_ms=tpot_ms,
            e2e_ms=ttft_ms + self._decode_steps * tpot_ms,
            cached_prompt_tokens=0 if matched <= 0 else (prompt if matched > prompt else matched),
        )
        return built

    def get(  # type: ignore[override]  # the two-argument form of Mapping.get's overloads
        self, backend_id: BackendId, default: BackendCostEstimate | None = None
    ) -> BackendCostEstimate | None:
        """``Mapping.get`` without its ``try``/``KeyError`` frame (routing reads the chosen cost)."""
        if backend_id in self._position:
            return self[backend_id]
        return default

    def __contains__(self, backend_id: object) -> bool:
        return backend_id in self._position

    def __iter__(self) -> Iterator[BackendId]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
