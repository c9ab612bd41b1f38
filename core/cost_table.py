"""``CostTable``: one request's predicted cost on every backend, each worked out when it is read.

Why: a 64-backend fleet needs 64 predicted costs per request only sometimes
(admission reads the best TTFT over all of them when it does not simply
admit), while routing looks closely at the dozen candidates that survive
sampling, and the decision keeps one. Building 64 frozen
``BackendCostEstimate`` objects per request cost more than the whole rest of
the decision, and computing the 64 rows' floats (numpy columns until engine4)
still ~13 µs of ~150. The table holds the request-independent terms of every
backend's row (``predictors.cost_columns``) and the request's own inputs; a
backend's floats are computed from them on each read (a few float
operations), ``ttft_tpot_list`` (the SLO filter's and cost scorer's read of the
sampled candidates) and ``ttft_tpot`` hand them out as plain floats, and a
``BackendCostEstimate`` is built only when one is read through the ``Mapping``
interface (then memoised).

Values are exactly those of the per-backend formula (the same float
operations in the same order as ``LatencyModel.estimate_all``)::

    new_tokens = P - min(matched, P) when matched > 0, else P
    prefill_ms = t1·new_tokens + t0
    ttft_ms    = max(0.01, prefill_ms + queue_ms)
    tpot_ms    = max(0.01, (in_flight_prompt + P)·p2 + tpot_base)

``e2e_ms = ttft_ms + decode_steps·tpot_ms`` and ``cached_prompt_tokens =
min(matched, prompt)`` are derived on access. The rows are never changed
under a table: ``FleetColumns`` copies its row list before changing a row a
table reads. A row is a tuple of six floats: one flat ``vec[float]`` of six
doubles per row was measured and not kept (no gain shown at the p99, pure
Python ~4.5 µs slower per request: docs/decision_cost_history.md, branch cost_rows).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from core.types import BackendCostEstimate, BackendId, BackendView

MIN_MS = 0.01  # a prediction's floor, as predictors.latency

# (queue_ms, t0, t1, tpot_base, p2, in_flight_prompt) of one backend: predictors.cost_columns.row_terms
RowTerms = tuple[float, float, float, float, float, float]


class CostTable(Mapping[BackendId, BackendCostEstimate]):
    """Read-only ``backend id -> BackendCostEstimate`` over per-backend terms (see module docstring)."""

    __slots__ = (
        "_best_known",
        "_best_ttft_ms",
        "_built",
        "_decode_steps",
        "_ids",
        "_matched",
        "_matched_dict",
        "_position",
        "_prompt",
        "_prompt_tokens",
        "_rows",
        "_terms",
    )

    def __init__(
        self,
        ids: Sequence[BackendId],
        position: dict[BackendId, int],
        terms: list[RowTerms],
        rows: tuple[int, ...] | None,
        *,
        prompt_tokens: int,
        matched_tokens: Mapping[BackendId, int],
        decode_steps: float,
    ) -> None:
        """``ids[i]``'s terms are ``terms[rows[i]]`` (``terms[i]`` when ``rows`` is None); ``position``
        maps each id to its ``i``."""
        self._ids = ids
        self._position = position
        self._terms = terms
        self._rows = rows
        self._prompt_tokens = prompt_tokens
        self._prompt = float(prompt_tokens)
        self._matched = matched_tokens
        # The prefix index's answer is a dict: read through dict operations (compiled: no generic call).
        self._matched_dict: dict[BackendId, int] | None = (
            matched_tokens if type(matched_tokens) is dict else None
        )
        self._decode_steps = decode_steps
        self._built: dict[BackendId, BackendCostEstimate] | None = None  # made on the first estimate read
        self._best_known = False
        self._best_ttft_ms: float | None = None

    def _row_terms(self, i: int) -> RowTerms:
        rows = self._rows
        return self._terms[i if rows is None else rows[i]]

    def _new_tokens(self, backend_id: BackendId) -> float:
        """The prompt tokens ``backend_id`` would prefill (the uncached part), as a float."""
        as_dict = self._matched_dict
        matched = as_dict.get(backend_id, 0) if as_dict is not None else self._matched.get(backend_id, 0)
        if matched > 0:
            prompt_tokens = self._prompt_tokens
            return float(prompt_tokens - (prompt_tokens if matched > prompt_tokens else matched))
        return self._prompt

    def _ttft_tpot_at(self, i: int, backend_id: BackendId) -> tuple[float, float]:
        queue_ms, t0, t1, tpot_base, p2, in_flight_prompt = self._row_terms(i)
        ttft_ms = t1 * self._new_tokens(backend_id) + t0 + queue_ms
        tpot_ms = (in_flight_prompt + self._prompt) * p2 + tpot_base
        # As np.maximum / estimate_all's floor: NaN stays NaN.
        return (MIN_MS if ttft_ms < MIN_MS else ttft_ms), (MIN_MS if tpot_ms < MIN_MS else tpot_ms)

    @property
    def best_ttft_ms(self) -> float | None:
        """The lowest predicted TTFT over the table (None when empty): admission's input."""
        if not self._best_known:
            ids = self._ids
            if ids:
                best = self._ttft_tpot_at(0, ids[0])[0]
                for i in range(1, len(ids)):
                    ttft_ms = self._ttft_tpot_at(i, ids[i])[0]
                    if ttft_ms < best:  # as min(): the first of equal values, a NaN first stays
                        best = ttft_ms
                self._best_ttft_ms = best
            self._best_known = True
        return self._best_ttft_ms

    def ttft_tpot(self, backend_id: BackendId) -> tuple[float, float] | None:
        """``(ttft_ms, tpot_ms)`` without building an estimate object; None if the backend is absent."""
        i = self._position.get(backend_id)
        if i is None:
            return None
        return self._ttft_tpot_at(i, backend_id)

    def ttft_tpot_list(self, views: Sequence[BackendView]) -> list[tuple[float, float]] | None:
        """``ttft_tpot`` of each of ``views``, in order; None when one of them is not in the table.

        Why: the SLO filter and the cost scorer read the ~16 sampled candidates' costs one after the
        other; one compiled loop here instead of two method calls per candidate through the context."""
        position = self._position
        terms, rows = self._terms, self._rows
        as_dict = self._matched_dict
        prompt_tokens, prompt = self._prompt_tokens, self._prompt
        out: list[tuple[float, float]] = []
        # ``_ttft_tpot_at`` inlined (the same float operations in the same order): the table's fields are
        # read once per call instead of once per candidate, and no two method calls per candidate.
        for view in views:
            backend_id = view.backend_id
            i = position.get(backend_id)
            if i is None:
                return None
            queue_ms, t0, t1, tpot_base, p2, in_flight_prompt = terms[i if rows is None else rows[i]]
            matched = as_dict.get(backend_id, 0) if as_dict is not None else self._matched.get(backend_id, 0)
            if matched > 0:
                new_tokens = float(prompt_tokens - (prompt_tokens if matched > prompt_tokens else matched))
            else:
                new_tokens = prompt
            ttft_ms = t1 * new_tokens + t0 + queue_ms
            tpot_ms = (in_flight_prompt + prompt) * p2 + tpot_base
            out.append(((MIN_MS if ttft_ms < MIN_MS else ttft_ms), (MIN_MS if tpot_ms < MIN_MS else tpot_ms)))
        return out

    def ttft_e2e(self, backend_id: BackendId) -> tuple[float, float] | None:
        """``(ttft_ms, e2e_ms)`` of the estimate ``self[backend_id]`` would build, without building it.

        Why: every routing decision reports its chosen backend's predicted TTFT and E2E, and
        building a ``BackendCostEstimate`` for two floats cost more than the rest of picking a
        backend on a small fleet. The same expressions as ``__getitem__``, so the same floats.
        """
        i = self._position.get(backend_id)
        if i is None:
            return None
        ttft_ms, tpot_ms = self._ttft_tpot_at(i, backend_id)
        return ttft_ms, ttft_ms + self._decode_steps * tpot_ms

    def __getitem__(self, backend_id: BackendId) -> BackendCostEstimate:
        memo = self._built
        if memo is None:
            memo = self._built = {}
        built = memo.get(backend_id)
        if built is not None:
            return built
        i = self._position[backend_id]
        queue_ms, t0, t1, tpot_base, p2, in_flight_prompt = self._row_terms(i)
        prefill_ms = t1 * self._new_tokens(backend_id) + t0
        ttft_ms = prefill_ms + queue_ms
        tpot_ms = (in_flight_prompt + self._prompt) * p2 + tpot_base
        ttft_ms = MIN_MS if ttft_ms < MIN_MS else ttft_ms
        tpot_ms = MIN_MS if tpot_ms < MIN_MS else tpot_ms
        matched = self._matched.get(backend_id, 0)
        prompt = self._prompt_tokens
        built = memo[backend_id] = BackendCostEstimate(
            backend_id=backend_id,
            queue_wait_ms=queue_ms,
            prefill_ms=prefill_ms,
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
