"""The fleet's value types, ``BackendView`` and ``FleetSnapshot``, compiled (imported from ``core.types``).

Why a module of their own: every routing decision reads a handful of ``BackendView`` fields for each
of up to 64 backends (serving, sampling, filters, scorers, admission, the cost columns). From compiled
code, a field of an interpreted slotted dataclass is a generic attribute lookup per read (type
lookup, descriptor call); compiled here, the two classes are mypyc native classes and a read from
compiled code is a load from the object's struct, and ``FleetSnapshot.serving`` runs compiled.
The other value types of ``core.types`` stay interpreted (docs/compiled.md says why).

What stays the same: names, fields, order, defaults, frozen (``FrozenInstanceError``), equality,
hashing, ``repr``, ``dataclasses.replace``/``fields``. What differs in the compiled build only: the
constructor checks the fields' types (a ``str`` where an ``int`` is declared raises ``TypeError``),
and pure Python builds them through ``core.fast_init`` (a native class has no slot descriptors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from core import native
from core.enums import Endpoint, Health
from core.fast_init import fast_frozen_init

BackendId = str

_EMPTY_STR_MAP: Mapping[str, str] = MappingProxyType({})
_EMPTY_SCORES: Mapping[str, Mapping[str, float]] = MappingProxyType({})

# Whether this module runs as the mypyc extension (``core.native`` decided it before any compiled
# module was imported): the interpreted classes get ``core.fast_init``'s cheaper constructor.
_COMPILED = __name__ in native.STATUS.compiled


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend as seen at snapshot time.

    Sluice's own accounting (``in_flight_*``, ``awaiting_first_byte``) is
    always current. Engine-reported fields (``engine_*``, ``kv_usage_frac``,
    ``prefix_hit_rate``) come from polling the backend's ``/metrics`` and may
    be ``None`` (never scraped) or stale (``metrics_stale``); policies must fall
    back to Sluice's own accounting in that case.

    ``in_flight_prompt_tokens`` sums the estimated prompt tokens of every
    in-flight request; ``awaiting_prompt_tokens`` (``None`` when the state
    layer does not track it) sums those of the requests still waiting for
    their first byte, i.e. the prefill work queued ahead of a new request.
    """

    backend_id: BackendId
    models: frozenset[str]
    gpu_class: str
    weight: float
    max_concurrency: int | None
    health: Health
    in_flight_requests: int
    awaiting_first_byte: int
    in_flight_prompt_tokens: int
    in_flight_predicted_decode_tokens: float
    engine_running: int | None = None
    engine_waiting: int | None = None
    kv_usage_frac: float | None = None
    prefix_hit_rate: float | None = None
    kv_capacity_tokens: int | None = None
    metrics_age_s: float | None = None
    metrics_stale: bool = True
    ewma_ttft_ms: float | None = None
    ewma_tpot_ms: float | None = None
    awaiting_prompt_tokens: int | None = None
    # Cumulative first bytes received from this backend and the sum of their TTFTs measured from each
    # attempt's dispatch, at the first byte itself (consumers diff them between snapshots: a TTFT
    # signal without the E2E delay of learning it only when the request ends).
    first_bytes: int = 0
    first_byte_ttft_ms_total: float = 0.0

    def __init__(
        self,
        backend_id: BackendId,
        models: frozenset[str],
        gpu_class: str,
        weight: float,
        max_concurrency: int | None,
        health: Health,
        in_flight_requests: int,
        awaiting_first_byte: int,
        in_flight_prompt_tokens: int,
        in_flight_predicted_decode_tokens: float,
        engine_running: int | None = None,
        engine_waiting: int | None = None,
        kv_usage_frac: float | None = None,
        prefix_hit_rate: float | None = None,
        kv_capacity_tokens: int | None = None,
        metrics_age_s: float | None = None,
        metrics_stale: bool = True,
        ewma_ttft_ms: float | None = None,
        ewma_tpot_ms: float | None = None,
        awaiting_prompt_tokens: int | None = None,
        first_bytes: int = 0,
        first_byte_ttft_ms_total: float = 0.0,
    ) -> None:
        """Store every field (the dataclass's signature and defaults). Compiled, this is a native
        constructor: the dataclass-generated ``__init__`` would be interpreted and store each field
        through ``object.__setattr__`` (2.4 µs against ~0.05). Interpreted, ``core.fast_init``
        replaces it (a frozen class refuses these stores from Python)."""
        self.backend_id = backend_id  # type: ignore[misc]  # frozen from the outside only
        self.models = models  # type: ignore[misc]  # frozen from the outside only
        self.gpu_class = gpu_class  # type: ignore[misc]  # frozen from the outside only
        self.weight = weight  # type: ignore[misc]  # frozen from the outside only
        self.max_concurrency = max_concurrency  # type: ignore[misc]  # frozen from the outside only
        self.health = health  # type: ignore[misc]  # frozen from the outside only
        self.in_flight_requests = in_flight_requests  # type: ignore[misc]  # frozen from the outside only
        self.awaiting_first_byte = awaiting_first_byte  # type: ignore[misc]  # frozen from the outside only
        self.in_flight_prompt_tokens = in_flight_prompt_tokens  # type: ignore[misc]  # frozen from the outside only
        self.in_flight_predicted_decode_tokens = in_flight_predicted_decode_tokens  # type: ignore[misc]  # frozen from the outside only
        self.engine_running = engine_running  # type: ignore[misc]  # frozen from the outside only
        self.engine_waiting = engine_waiting  # type: ignore[misc]  # frozen from the outside only
        self.kv_usage_frac = kv_usage_frac  # type: ignore[misc]  # frozen from the outside only
        self.prefix_hit_rate = prefix_hit_rate  # type: ignore[misc]  # frozen from the outside only
        self.kv_capacity_tokens = kv_capacity_tokens  # type: ignore[misc]  # frozen from the outside only
        self.metrics_age_s = metrics_age_s  # type: ignore[misc]  # frozen from the outside only
        self.metrics_stale = metrics_stale  # type: ignore[misc]  # frozen from the outside only
        self.ewma_ttft_ms = ewma_ttft_ms  # type: ignore[misc]  # frozen from the outside only
        self.ewma_tpot_ms = ewma_tpot_ms  # type: ignore[misc]  # frozen from the outside only
        self.awaiting_prompt_tokens = awaiting_prompt_tokens  # type: ignore[misc]  # frozen from the outside only
        self.first_bytes = first_bytes  # type: ignore[misc]  # frozen from the outside only
        self.first_byte_ttft_ms_total = first_byte_ttft_ms_total  # type: ignore[misc]  # frozen from the outside only

    @property
    def selectable(self) -> bool:
        """Whether new requests may be sent here."""
        return self.health is Health.READY

    def __reduce__(self) -> tuple[type[BackendView], tuple[object, ...]]:
        """Pickle and ``copy`` through the constructor: the compiled class's default state
        restore assigns each field, which its frozen ``__setattr__`` refuses."""
        return (
            BackendView,
            (
                self.backend_id,
                self.models,
                self.gpu_class,
                self.weight,
                self.max_concurrency,
                self.health,
                self.in_flight_requests,
                self.awaiting_first_byte,
                self.in_flight_prompt_tokens,
                self.in_flight_predicted_decode_tokens,
                self.engine_running,
                self.engine_waiting,
                self.kv_usage_frac,
                self.prefix_hit_rate,
                self.kv_capacity_tokens,
                self.metrics_age_s,
                self.metrics_stale,
                self.ewma_ttft_ms,
                self.ewma_tpot_ms,
                self.awaiting_prompt_tokens,
                self.first_bytes,
                self.first_byte_ttft_ms_total,
            ),
        )


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """All backends at one instant; taken once per decision and never mutated."""

    backends: tuple[BackendView, ...]
    taken_at_s: float
    version: int = 0
    # The backends' ids in the same order, when the state that builds snapshots knows them without
    # reading the views: ``state.fleet`` passes one tuple shared by every snapshot while the fleet's
    # membership is unchanged. A decision's explanation (``policies.pipeline.RemovedBy``) keeps these
    # ids instead of the views, so the decision log (1,024 decisions) does not keep every snapshot's
    # views alive and free them, cold, ~1,000 decisions later. ``None``: not known (read the views).
    # Whoever passes it promises it matches ``backends`` (``replace(backends=...)`` must pass None).
    backend_ids: tuple[BackendId, ...] | None = field(default=None, compare=False, repr=False)
    # ``serving`` per model, filled on first use: admission and the routing pipeline both ask for it on
    # the same snapshot for every request, and the snapshot never changes.
    _serving_by_model: dict[str, tuple[BackendView, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __init__(
        self,
        backends: tuple[BackendView, ...],
        taken_at_s: float,
        version: int = 0,
        backend_ids: tuple[BackendId, ...] | None = None,
    ) -> None:
        """Store the fields and an empty ``serving`` cache (see ``BackendView.__init__`` for why)."""
        self.backends = backends  # type: ignore[misc]  # frozen from the outside only
        self.taken_at_s = taken_at_s  # type: ignore[misc]
        self.version = version  # type: ignore[misc]
        self.backend_ids = backend_ids  # type: ignore[misc]
        self._serving_by_model = {}  # type: ignore[misc]

    def __reduce__(self) -> tuple[type[FleetSnapshot], tuple[object, ...]]:
        """Pickle and ``copy`` through the constructor (see ``BackendView.__reduce__``); the copy
        starts with an empty ``serving`` cache, which is derived from the fields."""
        return (FleetSnapshot, (self.backends, self.taken_at_s, self.version, self.backend_ids))

    def by_id(self) -> dict[BackendId, BackendView]:
        return {b.backend_id: b for b in self.backends}

    def serving(self, model: str) -> tuple[BackendView, ...]:
        """Selectable backends that serve ``model``, in fleet order (computed once per model)."""
        views = self._serving_by_model.get(model)
        if views is None:
            ready = Health.READY
            backends = self.backends
            every = True
            for b in backends:
                if b.health is not ready or model not in b.models:
                    every = False
                    break
            if every:  # every backend serves it (the usual case): the snapshot's own tuple, no copy
                views = backends
            else:
                views = tuple([b for b in backends if b.health is ready and model in b.models])  # no genexpr
            self._serving_by_model[model] = views
        return views


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """Everything a decision may know about one request, taken from the request only.

    ``prompt_tokens`` is an estimate (``core.tokens.estimate_tokens``), not an
    engine count. ``prefix_hashes`` are chained hashes of fixed-size character
    chunks of the rendered prompt (``core.tokens.prefix_chunk_hashes``), so two
    prompts share the first k hashes iff they share the first k chunks.
    Simulator ground-truth headers (``x-sim-*``) are never copied here.
    """

    request_id: str
    endpoint: Endpoint
    route: str
    model: str
    tenant: str
    priority: str
    prompt_tokens: int
    prompt_chars: int
    prefix_hashes: tuple[int, ...]
    last_user_text: str
    n_messages: int
    n_user_turns: int
    max_tokens: int | None
    stream: bool
    arrival_s: float
    session_key: str | None = None
    # The client's own attempt counter (``x-stainless-retry-count``: 0 first, n on the n-th retry);
    # None when the client sends none. Tells a returning retry from a fresh request.
    client_retry_count: int | None = None

    def __init__(
        self,
        request_id: str,
        endpoint: Endpoint,
        route: str,
        model: str,
        tenant: str,
        priority: str,
        prompt_tokens: int,
        prompt_chars: int,
        prefix_hashes: tuple[int, ...],
        last_user_text: str,
        n_messages: int,
        n_user_turns: int,
        max_tokens: int | None,
        stream: bool,
        arrival_s: float,
        session_key: str | None = None,
        client_retry_count: int | None = None,
    ) -> None:
        """Store every field, natively when compiled (see ``BackendView.__init__``)."""
        self.request_id = request_id  # type: ignore[misc]
        self.endpoint = endpoint  # type: ignore[misc]
        self.route = route  # type: ignore[misc]
        self.model = model  # type: ignore[misc]
        self.tenant = tenant  # type: ignore[misc]
        self.priority = priority  # type: ignore[misc]
        self.prompt_tokens = prompt_tokens  # type: ignore[misc]
        self.prompt_chars = prompt_chars  # type: ignore[misc]
        self.prefix_hashes = prefix_hashes  # type: ignore[misc]
        self.last_user_text = last_user_text  # type: ignore[misc]
        self.n_messages = n_messages  # type: ignore[misc]
        self.n_user_turns = n_user_turns  # type: ignore[misc]
        self.max_tokens = max_tokens  # type: ignore[misc]
        self.stream = stream  # type: ignore[misc]
        self.arrival_s = arrival_s  # type: ignore[misc]
        self.session_key = session_key  # type: ignore[misc]
        self.client_retry_count = client_retry_count  # type: ignore[misc]

    def __reduce__(self) -> tuple[type[RequestFeatures], tuple[object, ...]]:
        """Pickle and ``copy`` through the constructor (see ``BackendView.__reduce__``)."""
        return (
            RequestFeatures,
            (
                self.request_id,
                self.endpoint,
                self.route,
                self.model,
                self.tenant,
                self.priority,
                self.prompt_tokens,
                self.prompt_chars,
                self.prefix_hashes,
                self.last_user_text,
                self.n_messages,
                self.n_user_turns,
                self.max_tokens,
                self.stream,
                self.arrival_s,
                self.session_key,
                self.client_retry_count,
            ),
        )


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """A ranked list of backends (first = chosen, rest = retry fallbacks) with its explanation.

    ``ranked`` empty means nothing could serve the request; ``reason`` then says
    why (e.g. every candidate filtered out) and the data plane answers 503.
    ``scores[scorer][backend]`` holds each scorer's raw score in [0, 1];
    ``removed[backend]`` names the filter that removed it.
    ``predicted_output_tokens`` is the expected output length the decision
    assumed (set by the DecisionEngine); the data plane adds it to the chosen
    backend's ``in_flight_predicted_decode_tokens`` while the request runs.
    """

    ranked: tuple[BackendId, ...]
    policy: str
    scores: Mapping[str, Mapping[BackendId, float]] = field(default_factory=lambda: _EMPTY_SCORES)
    removed: Mapping[BackendId, str] = field(default_factory=lambda: _EMPTY_STR_MAP)
    predicted_ttft_ms: float | None = None
    predicted_e2e_ms: float | None = None
    reason: str | None = None
    predicted_output_tokens: float | None = None

    def __init__(
        self,
        ranked: tuple[BackendId, ...],
        policy: str,
        scores: Mapping[str, Mapping[BackendId, float]] = _EMPTY_SCORES,
        removed: Mapping[BackendId, str] = _EMPTY_STR_MAP,
        predicted_ttft_ms: float | None = None,
        predicted_e2e_ms: float | None = None,
        reason: str | None = None,
        predicted_output_tokens: float | None = None,
    ) -> None:
        """Store every field, natively when compiled (see ``BackendView.__init__``)."""
        self.ranked = ranked  # type: ignore[misc]
        self.policy = policy  # type: ignore[misc]
        self.scores = scores  # type: ignore[misc]
        self.removed = removed  # type: ignore[misc]
        self.predicted_ttft_ms = predicted_ttft_ms  # type: ignore[misc]
        self.predicted_e2e_ms = predicted_e2e_ms  # type: ignore[misc]
        self.reason = reason  # type: ignore[misc]
        self.predicted_output_tokens = predicted_output_tokens  # type: ignore[misc]

    def __reduce__(self) -> tuple[type[RoutingDecision], tuple[object, ...]]:
        """Pickle and ``copy`` through the constructor (see ``BackendView.__reduce__``)."""
        return (
            RoutingDecision,
            (
                self.ranked,
                self.policy,
                self.scores,
                self.removed,
                self.predicted_ttft_ms,
                self.predicted_e2e_ms,
                self.reason,
                self.predicted_output_tokens,
            ),
        )

    @property
    def chosen(self) -> BackendId | None:
        return self.ranked[0] if self.ranked else None


if not _COMPILED:  # built per request: core.fast_init says why
    fast_frozen_init(BackendView)
    fast_frozen_init(FleetSnapshot)
    fast_frozen_init(RequestFeatures)
    fast_frozen_init(RoutingDecision)
