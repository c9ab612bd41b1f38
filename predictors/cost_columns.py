"""Per-backend latency predictions for one request, kept incrementally and computed per backend on read.

The latency model (``predictors.latency``) is linear in load terms that do not
depend on the request. Per backend ``b`` with coefficients ``(t0..t5, p0..p2)``
(per token) and its view's load (``backend_load``)::

    queue_ms(b)  = t2·queued + t3·waiting + t4·running [+ t5·decode·kv pressure] [+ t6·slot_queue]
    tpot_base(b) = p0 + p1·(running + waiting + 1)

and for a request of ``P`` prompt tokens of which ``cached(b)`` are cached:

    prefill_ms = t0 + t1·(P - cached(b))
    ttft_ms    = max(0.01, prefill_ms + queue_ms)
    tpot_ms    = max(0.01, tpot_base + p2·(in_flight_prompt + P))

``FleetColumns`` holds each backend's ``(queue_ms, t0, t1, tpot_base, p2,
in_flight_prompt)`` in snapshot order. A snapshot shares its unchanged
``BackendView`` objects with the previous one (``state.fleet`` rebuilds only
the views that changed), so ``sync`` recomputes only the rows whose view
object changed or whose coefficients were re-learned since the last call.
The request's own part is not computed here: ``core.cost_table.CostTable``
works out a backend's four floats when they are read. Why: on a 64-backend
fleet routing reads the ~16 candidates that survive sampling, and admission
reads the best TTFT over the fleet only for a request it does not simply
admit; computing all 64 rows per request (numpy columns until engine4) cost
~13 µs of the decision's ~150, reading 16 rows ~3.

Every value is computed with the same float operations in the same order as
``LatencyModel.estimate_all``, so the numbers are bit-for-bit identical;
``tests/unit/test_cost_columns.py`` checks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from core.cost_table import CostTable, RowTerms
from core.types import BackendId, BackendView, Health

KV_PRESSURE_START_FRAC = 0.8  # as predictors.latency
_PRESSURE_SCALE = 1.0 / (1.0 - KV_PRESSURE_START_FRAC)

Coefficients = tuple[float, ...]  # (t0, t1, t2, t3, t4, t5, p0, p1, p2, t6, slot_limit), per token


def row_terms(view: BackendView, coefs: Coefficients) -> RowTerms:
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

    __slots__ = ("ids", "position", "rows")

    def __init__(self, ids: tuple[BackendId, ...], rows: tuple[int, ...] | None) -> None:
        self.ids = ids
        self.position = {backend_id: i for i, backend_id in enumerate(ids)}
        self.rows = rows


class FleetColumns:
    """Request-independent cost terms of every backend, updated row by row (see module docstring)."""

    __slots__ = ("_coefs_for", "_dirty", "_eligible", "_ids", "_row_of", "_shared", "_terms", "_views")

    def __init__(self, coefs_for: Callable[[BackendId], Coefficients]) -> None:
        self._coefs_for = coefs_for
        self._views: tuple[BackendView, ...] = ()
        self._ids: tuple[BackendId, ...] = ()
        self._row_of: dict[BackendId, int] = {}
        self._terms: list[RowTerms] = []
        # Whether a table handed out reads ``_terms``: the next change then copies the list first, so a
        # table keeps the values it was built on (a request admitted now may be routed after an observe).
        self._shared = False
        self._eligible: dict[str | None, _Eligible] = {}
        self._dirty: set[BackendId] = set()

    def coefficients_changed(self, backend_id: BackendId) -> None:
        """Recompute this backend's row at the next ``sync`` (its coefficients were re-learned)."""
        self._dirty.add(backend_id)

    def sync(self, views: tuple[BackendView, ...]) -> None:
        """Bring the rows up to date with ``views`` (a snapshot's backends, in order)."""
        old = self._views
        if views is not old:
            if len(views) != len(old):
                self._rebuild(views)
                return
            for i in range(len(views)):  # compiled: an identity test per row (no iterator objects)
                view, was = views[i], old[i]
                if view is was:
                    continue
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
        coefs_for = self._coefs_for
        self._terms = [row_terms(view, coefs_for(view.backend_id)) for view in views]
        self._shared = False
        self._eligible.clear()
        self._dirty.clear()

    def _set_row(self, row: int, view: BackendView) -> None:
        if self._shared:
            self._terms = self._terms.copy()  # 64 references: ~0.2 µs, once per request at most
            self._shared = False
        self._terms[row] = row_terms(view, self._coefs_for(view.backend_id))

    def _eligible_for(self, model: str | None) -> _Eligible:
        eligible = self._eligible.get(model)
        if eligible is None:
            ready = Health.READY
            rows = [
                i
                for i, view in enumerate(self._views)
                if view.health is ready and (model is None or model in view.models)
            ]
            ids = tuple(self._ids[i] for i in rows)
            eligible = self._eligible[model] = _Eligible(
                ids, None if len(rows) == len(self._views) else tuple(rows)
            )
        return eligible

    def table(
        self,
        model: str | None,
        prompt_tokens: int,
        matched_tokens: Mapping[BackendId, int],
        output_p50_tokens: float,
    ) -> CostTable:
        """Costs of one request on every selectable backend serving ``model`` (after ``sync``), lazily."""
        eligible = self._eligible_for(model)
        self._shared = True
        return CostTable(
            eligible.ids,
            eligible.position,
            self._terms,
            eligible.rows,
            prompt_tokens=prompt_tokens,
            matched_tokens=matched_tokens,
            decode_steps=output_p50_tokens - 1.0 if output_p50_tokens > 1.0 else 0.0,
        )
