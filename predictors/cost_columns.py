"""Per-backend latency predictions for one request, vectorised over the fleet and kept incrementally.

The latency model (``predictors.latency``) is linear in load terms that do not
depend on the request. Per backend ``b`` with coefficients ``(t0..t5, p0..p2)``
(per token) and its view's load (``backend_load``)::

    queue_ms(b)  = t2·queued + t3·waiting + t4·running [+ t5·decode·kv pressure] [+ t6·slot_queue]
    tpot_base(b) = p0 + p1·(running + waiting + 1)

and for a request of ``P`` prompt tokens of which ``cached(b)`` are cached:

    prefill_ms = t0 + t1·(P - cached(b))
    ttft_ms    = max(0.01, prefill_ms + queue_ms)
    tpot_ms    = max(0.01, tpot_base + p2·(in_flight_prompt + P))

``FleetColumns`` holds ``queue_ms, t0, t1, tpot_base, p2, in_flight_prompt``
as numpy columns in snapshot order. A snapshot shares its unchanged
``BackendView`` objects with the previous one (``state.fleet`` rebuilds only
the views that changed), so ``sync`` recomputes only the rows whose view
object changed or whose coefficients were re-learned since the last call; a
request then costs a handful of array operations, whatever the fleet size.

Every value is computed with the same float operations in the same order as
``LatencyModel.estimate_all`` (numpy's elementwise ``+``/``*`` are IEEE
double operations, like Python's), so the numbers are bit-for-bit identical;
``tests/unit/test_cost_columns.py`` checks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import compress, count
from operator import is_not

import numpy as np
import numpy.typing as npt

from core.cost_table import CostTable
from core.types import BackendId, BackendView, Health

KV_PRESSURE_START_FRAC = 0.8  # as predictors.latency
MIN_MS = 0.01
_PRESSURE_SCALE = 1.0 / (1.0 - KV_PRESSURE_START_FRAC)
_COLUMNS = 6  # queue_ms, t0, t1, tpot_base, p2, in_flight_prompt
# Up to this many eligible backends the request's costs are computed on the rows' Python floats: a
# dozen numpy calls on tiny arrays cost ~15 µs of per-call overhead, more than the arithmetic itself
# (measured with bench/decision_cost.py --backends 2). Same IEEE operations in the same order, so
# the same bits as the column path.
SMALL_FLEET_ROWS = 16

Coefficients = tuple[float, ...]  # (t0, t1, t2, t3, t4, t5, p0, p1, p2, t6, slot_limit), per token
Floats = npt.NDArray[np.float64]


def row_terms(view: BackendView, coefs: Coefficients) -> tuple[float, float, float, float, float, float]:
    """``(queue_ms, t0, t1, tpot_base, p2, in_flight_prompt)`` of one backend (module docstring)."""
    fresh = not view.metrics_stale
    awaiting = view.awaiting_first_byte
    in_flight = view.in_flight_requests
    running = in_flight - awaiting if in_flight > awaiting else 0
    waiting = awaiting
    in_flight_prompt = view.in_flight_prompt_tokens
    queued_tokens = view.awaiting_prompt_tokens
    if queued_tokens is not None:
        queued = float(queued_tokens)
    else:
        queued = in_flight_prompt * awaiting / in_flight if in_flight > 0 else 0.0
    decode = view.in_flight_predicted_decode_tokens
    kv = None
    if fresh:
        engine = view.engine_running
        if engine is not None and engine > running:
            running = engine
        engine = view.engine_waiting
        if engine is not None and engine > waiting:
            waiting = engine
        hit_rate = view.prefix_hit_rate
        if hit_rate is not None and hit_rate > 0.0:
            queued *= 1.0 - hit_rate if hit_rate < 1.0 else 0.0
        kv = view.kv_usage_frac
    if kv is None:
        capacity = view.kv_capacity_tokens
        if capacity:
            kv = (in_flight_prompt + decode) / capacity
    t0, t1, t2, t3, t4, t5, p0, p1, p2, t6, slot_limit = coefs
    queue_ms = t2 * queued + t3 * waiting + t4 * running
    if kv is not None and kv > KV_PRESSURE_START_FRAC and decode > 0:
        queue_ms += t5 * decode * (kv - KV_PRESSURE_START_FRAC) * _PRESSURE_SCALE
    if slot_limit > 0.0:
        slots = running + waiting + 1 - (slot_limit if slot_limit > running else running)
        if slots > 0:
            queue_ms += t6 * slots
    return queue_ms, t0, t1, p0 + p1 * (running + waiting + 1), p2, float(in_flight_prompt)


class _Eligible:
    """The rows selectable for one model: their ids, positions and row indices (None = every row)."""

    __slots__ = ("ids", "position", "row_list", "rows")

    def __init__(
        self, ids: tuple[BackendId, ...], rows: npt.NDArray[np.intp] | None, row_list: tuple[int, ...]
    ) -> None:
        self.ids = ids
        self.position = {backend_id: i for i, backend_id in enumerate(ids)}
        self.rows = rows
        self.row_list = row_list


class FleetColumns:
    """Request-independent cost terms of every backend, updated row by row (see module docstring)."""

    __slots__ = (
        "_coefs_for",
        "_columns",
        "_dirty",
        "_eligible",
        "_ids",
        "_row_of",
        "_terms",
        "_uses_columns",
        "_views",
    )

    def __init__(self, coefs_for: Callable[[BackendId], Coefficients]) -> None:
        self._coefs_for = coefs_for
        self._views: tuple[BackendView, ...] = ()
        self._ids: tuple[BackendId, ...] = ()
        self._row_of: dict[BackendId, int] = {}
        self._columns: tuple[Floats, ...] = tuple(np.zeros(0) for _ in range(_COLUMNS))
        self._terms: list[tuple[float, ...]] = []  # the same rows as Python floats (small fleets)
        self._eligible: dict[str | None, _Eligible] = {}
        self._dirty: set[BackendId] = set()
        # Whether ``table`` can take the numpy path: only with more than SMALL_FLEET_ROWS backends.
        self._uses_columns = False

    def coefficients_changed(self, backend_id: BackendId) -> None:
        """Recompute this backend's row at the next ``sync`` (its coefficients were re-learned)."""
        self._dirty.add(backend_id)

    def sync(self, views: tuple[BackendView, ...]) -> None:
        """Bring the columns up to date with ``views`` (a snapshot's backends, in order)."""
        old = self._views
        if views is not old:
            if len(views) != len(old):
                self._rebuild(views)
                return
            for i in compress(count(), map(is_not, views, old)):  # changed rows, found at C speed
                view, was = views[i], old[i]
                if view.backend_id != was.backend_id:
                    self._rebuild(views)
                    return
                if view.health is not was.health or view.models != was.models:
                    self._eligible.clear()
                self._set_row(i, view)
            self._views = views
        if self._dirty:
            for backend_id in self._dirty:
                row = self._row_of.get(backend_id)
                if row is not None:
                    self._set_row(row, views[row])
            self._dirty.clear()

    def _rebuild(self, views: tuple[BackendView, ...]) -> None:
        self._views = views
        self._ids = tuple(view.backend_id for view in views)
        self._row_of = {backend_id: i for i, backend_id in enumerate(self._ids)}
        self._columns = tuple(np.zeros(len(views)) for _ in range(_COLUMNS))
        self._terms = [()] * len(views)
        self._uses_columns = len(views) > SMALL_FLEET_ROWS
        self._eligible.clear()
        self._dirty.clear()
        for i, view in enumerate(views):
            self._set_row(i, view)

    def _set_row(self, row: int, view: BackendView) -> None:
        terms = row_terms(view, self._coefs_for(view.backend_id))
        self._terms[row] = terms
        if self._uses_columns:  # a small fleet's table reads ``_terms`` only: skip six numpy stores
            for column, value in zip(self._columns, terms, strict=True):
                column[row] = value

    def _eligible_for(self, model: str | None) -> _Eligible:
        eligible = self._eligible.get(model)
        if eligible is None:
            ready = Health.READY
            rows = [
                i
                for i, view in enumerate(self._views)
                if view.health is ready and (model is None or model in view.models)
            ]
            all_rows = len(rows) == len(self._views)
            ids = tuple(self._ids[i] for i in rows)
            eligible = self._eligible[model] = _Eligible(
                ids, None if all_rows else np.array(rows, np.intp), tuple(rows)
            )
        return eligible

    def table(
        self,
        model: str | None,
        prompt_tokens: int,
        matched_tokens: Mapping[BackendId, int],
        output_p50_tokens: float,
    ) -> CostTable:
        """Costs of one request on every selectable backend serving ``model`` (after ``sync``)."""
        eligible = self._eligible_for(model)
        if len(eligible.ids) <= SMALL_FLEET_ROWS:
            return self._small_table(eligible, prompt_tokens, matched_tokens, output_p50_tokens)
        rows = eligible.rows
        columns = self._columns if rows is None else tuple(column[rows] for column in self._columns)
        queue_ms, t0, t1, tpot_base, p2, in_flight_prompt = columns
        new_tokens: Floats = np.empty(len(eligible.ids))
        new_tokens.fill(float(prompt_tokens))
        position = eligible.position
        for backend_id, matched in matched_tokens.items():
            i = position.get(backend_id)
            if i is not None and matched > 0:
                new_tokens[i] = prompt_tokens - (prompt_tokens if matched > prompt_tokens else matched)
        # Same operations as estimate_all, in place: t0 + t1·new (IEEE addition commutes), + queue.
        prefill_ms: Floats = t1 * new_tokens
        prefill_ms += t0
        ttft_ms: Floats = prefill_ms + queue_ms
        np.maximum(ttft_ms, MIN_MS, out=ttft_ms)
        tpot_ms: Floats = in_flight_prompt + float(prompt_tokens)
        tpot_ms *= p2
        tpot_ms += tpot_base
        np.maximum(tpot_ms, MIN_MS, out=tpot_ms)
        ttft_list = _floats(ttft_ms)
        return CostTable(
            eligible.ids,
            position,
            queue_ms,  # read per backend only when an estimate object is built
            prefill_ms,
            ttft_list,
            _floats(tpot_ms),
            prompt_tokens=prompt_tokens,
            matched_tokens=matched_tokens,
            decode_steps=output_p50_tokens - 1.0 if output_p50_tokens > 1.0 else 0.0,
            best_ttft_ms=min(ttft_list) if ttft_list else None,
        )

    def _small_table(
        self,
        eligible: _Eligible,
        prompt_tokens: int,
        matched_tokens: Mapping[BackendId, int],
        output_p50_tokens: float,
    ) -> CostTable:
        """``table`` for a few backends, row by row on Python floats (``SMALL_FLEET_ROWS``)."""
        prompt = float(prompt_tokens)
        position = eligible.position
        new_tokens = [prompt] * len(eligible.ids)
        for backend_id, matched in matched_tokens.items():
            i = position.get(backend_id)
            if i is not None and matched > 0:
                new_tokens[i] = prompt_tokens - (prompt_tokens if matched > prompt_tokens else matched)
        queue_list: list[float] = []
        prefill_list: list[float] = []
        ttft_list: list[float] = []
        tpot_list: list[float] = []
        terms = self._terms
        for row, new in zip(eligible.row_list, new_tokens, strict=True):
            queue_ms, t0, t1, tpot_base, p2, in_flight_prompt = terms[row]
            prefill_ms = t1 * new + t0
            ttft_ms = prefill_ms + queue_ms
            tpot_ms = (in_flight_prompt + prompt) * p2 + tpot_base
            queue_list.append(queue_ms)
            prefill_list.append(prefill_ms)
            ttft_list.append(MIN_MS if ttft_ms < MIN_MS else ttft_ms)  # as np.maximum, NaN stays NaN
            tpot_list.append(MIN_MS if tpot_ms < MIN_MS else tpot_ms)
        return CostTable(
            eligible.ids,
            position,
            queue_list,
            prefill_list,
            ttft_list,
            tpot_list,
            prompt_tokens=prompt_tokens,
            matched_tokens=matched_tokens,
            decode_steps=output_p50_tokens - 1.0 if output_p50_tokens > 1.0 else 0.0,
            best_ttft_ms=min(ttft_list) if ttft_list else None,
        )


def _floats(column: Floats) -> Sequence[float]:
    values: list[float] = column.tolist()
    return values
