"""The Sluice configuration schema: the one conversion path from YAML to typed settings.

Every section forbids unknown keys and checks ranges, so a typo stops
start-up with the file and line (``core.yaml_source``) instead of being
ignored. Policy parameters are plain mappings here and are validated by the
policy registry against each plugin's own schema, with the same file/line
reporting (``LoadedConfig.source``).

Durations carry their unit in the key (``_ms``, ``_s``); sizes in bytes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.admission_config import AdmissionConfig, RouteAdmissionConfig, TenantsConfig
from core.yaml_source import SourceMap, load_yaml, load_yaml_text, validate

MetricsFormat = Literal["auto", "vllm", "sglang", "llamacpp", "tgi", "none"]
ProxiedPath = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    access_log: bool = Field(False, description="one log line per request; off by default (it costs CPU)")
    debug_endpoints: bool = Field(
        True, description="serve GET /debug/decisions (recent routing decisions with their scores)"
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="on SIGINT/SIGTERM, how long in-flight requests may finish"
    )


class TimeoutsConfig(StrictModel):
    """Upstream timeouts. There is deliberately no total: a healthy stream may run for hours."""

    connect_ms: float = Field(2_000, gt=0)
    first_byte_ms: float = Field(120_000, gt=0, description="request sent -> first response byte")
    idle_ms: float = Field(60_000, gt=0, description="longest gap between two stream chunks")


class RetriesConfig(StrictModel):
    """Retries happen only before the first byte reaches the client."""

    max_per_request: int = Field(2, ge=0, le=2)
    budget_ratio: float = Field(0.1, ge=0.0, le=0.1, description="retries / requests over the window")
    budget_window_s: float = Field(10.0, gt=0)
    budget_min_retries: int = Field(3, ge=0, description="retries always allowed per window at low volume")
    on_status: tuple[int, ...] = (429, 502, 503)

    @field_validator("on_status")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for status in value:
            if not 400 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP error status")
        return value


class HealthConfig(StrictModel):
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(2.0, gt=0)
    path: str = "/health"
    unhealthy_after: int = Field(2, ge=1, description="consecutive failed checks before DOWN")
    healthy_after: int = Field(1, ge=1, description="consecutive passed checks before READY")


class CircuitBreakerConfig(StrictModel):
    """Passive ejection. Counts connect errors and 5xx answers only, never slowness."""

    consecutive_failures: int = Field(5, ge=1)
    open_s: float = Field(10.0, gt=0, description="time ejected before a half-open probe request")


class LimitsConfig(StrictModel):
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_in_flight: int | None = Field(None, ge=1, description="whole-proxy cap on concurrent requests")
    body_read_timeout_s: float = Field(
        30.0, gt=0, description="longest time a client may take to send its request body"
    )


class MetricsPollConfig(StrictModel):
    """Polling of backends' engine metrics (vLLM, SGLang, llama.cpp, TGI)."""

    interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(0.5, gt=0)
    stale_after_s: float = Field(5.0, gt=0)
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="a larger /metrics answer is abandoned and counts as stale"
    )


class BackendConfig(StrictModel):
    name: str
    url: str
    models: tuple[str, ...]
    gpu: str = Field("unknown", description="GPU/profile label, e.g. h100, a100, l4")
    weight: float = Field(1.0, gt=0)
    max_concurrency: int | None = Field(None, ge=1)
    health_path: str | None = None
    metrics_format: MetricsFormat = "auto"
    metrics_path: str = "/metrics"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must be letters, digits, '_', '.', '-' (it is used as a metric label)")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not m for m in value):
            raise ValueError("must list at least one non-empty model name")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("health_path", "metrics_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class RouteMatch(StrictModel):
    """All given conditions must hold. ``model`` is a shell-style glob; header names are case-insensitive."""

    path: ProxiedPath | None = None
    model: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    def matches(self, path: str, model: str, headers: Mapping[str, str]) -> bool:
        if self.path is not None and self.path != path:
            return False
        if self.model is not None and not fnmatch.fnmatchcase(model, self.model):
            return False
        return all(headers.get(name) == value for name, value in self.headers.items())


class SLOConfig(StrictModel):
    ttft_ms: float | None = Field(None, gt=0)
    tpot_ms: float | None = Field(None, gt=0)
    e2e_ms: float | None = Field(None, gt=0)


class PolicyConfig(StrictModel):
    """A routing policy by registered name; ``params`` are checked by that policy's schema."""

    name: str = "round_robin"
    params: dict[str, Any] = Field(default_factory=dict)


class RouteConfig(StrictModel):
    name: str
    match: RouteMatch = Field(default_factory=RouteMatch)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    slo: SLOConfig = Field(default_factory=SLOConfig)
    priority: str = Field("standard", description="class of requests that don't name one")
    admission: RouteAdmissionConfig = Field(default_factory=RouteAdmissionConfig)


class PrefixIndexConfig(StrictModel):
    """The proxy's approximate per-backend prefix index (``state/prefix_index.py``).

    ``max_entries`` bounds memory: one entry is one (backend, 64-character
    prefix chunk) pair, about 16 estimated tokens of a backend's KV cache; see
    docs/policies.md for the measured bytes per entry. Entries are dropped
    least-recently-routed first, and after ``ttl_s`` without being routed again.
    """

    max_entries: int = Field(262_144, ge=1, description="(backend, chunk) pairs kept in total")
    ttl_s: float = Field(120.0, gt=0, description="forget a prefix not routed to a backend for this long")
    max_match_chunks: int = Field(
        1_024, ge=1, description="chunks of a prompt matched and indexed (caps cost for huge prompts)"
    )


class RefitConfig(StrictModel):
    """Guarded background refit of the output-length model (``predictors/refit.py``, docs/predictors.md).

    A ridge correction of the loaded model is fitted on a bounded sample of observed outcomes in a
    worker process every ``every_outcomes`` outcomes, and swapped in only if it ranks the newest
    ``holdout`` outcomes (not used to fit) better than what was served, and no (route, model,
    tenant) group with ``min_group_outcomes`` of them worse. On by default: the worker process is
    started only when the first refit is due.
    """

    enabled: bool = Field(
        True,
        description="needs online_refinement (the outcomes it learns from); inactive without it unless "
        "set explicitly, which is then an error",
    )
    every_outcomes: int = Field(5_000, ge=1, description="learnable outcomes between two refits")
    reservoir_size: int = Field(
        20_000, ge=10, description="outcomes kept to fit (uniform sample, ~0.5 KB each)"
    )
    holdout: int = Field(2_000, ge=10, description="newest outcomes the guard judges on (not fitted)")
    alpha: float = Field(1.0, gt=0, description="ridge strength toward the loaded model's weights")
    min_tau_gain: float = Field(
        0.01, description="Kendall tau the refit must gain on the holdout to be swapped"
    )
    reset_online: bool = Field(
        True, description="reset the online corrections at a swap (the refit learned the same outcomes)"
    )
    min_group_outcomes: int = Field(
        100,
        ge=0,
        description="per-group guard: every (route, model, tenant) key with at least this many holdout "
        "outcomes must not get worse (0 = judge the pooled holdout only)",
    )
    group_max_tau_loss: float = Field(
        0.0, ge=0, description="per-group guard: Kendall tau a group may lose against what was served"
    )
    group_max_log_mae_loss: float = Field(
        0.02, ge=0, description="per-group guard: log-MAE a group may lose against what was served"
    )
    max_worker_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="at most this share of the wall time has a refit job running (after a job of d "
        "seconds the next waits d * (1 / share - 1)): the worker process does not take a core from the "
        "proxy at high request rates; 1 = jobs back to back",
    )


class PredictorsConfig(StrictModel):
    """Output-length and per-backend latency predictors (``predictors/``) used by routing and admission.

    Disabled, policies and admission fall back to a prompt-based prior and the
    snapshot's own counts; it saves ~40 us per request for the baselines that
    never read predictions.
    """

    enabled: bool = Field(True, description="predict for every request (routing and admission)")
    output_length_model: str | None = Field(None, description="path; None = the bundled default model")
    online_refinement: bool = True
    online_feature_weights: bool = Field(
        True,
        description="with online_refinement: also learn a bounded sparse linear correction on the length "
        "features (ranking within a tenant, predictors/online_features.py)",
    )
    online_feature_pairs: bool = Field(
        False,
        description="the online feature weights also learn adjacent token pairs (more ranking, "
        "+~7 us p50 / +~25 us p99 per predict: docs/predictors.md)",
    )
    refit: RefitConfig = Field(default_factory=RefitConfig)

    @model_validator(mode="after")
    def _refit_needs_outcomes(self) -> PredictorsConfig:
        # On by default: only an explicit ``refit.enabled: true`` without its outcomes is a mistake.
        explicit = "enabled" in self.refit.model_fields_set
        if explicit and self.refit.enabled and not (self.enabled and self.online_refinement):
            raise ValueError("predictors.refit.enabled needs predictors.enabled and online_refinement")
        return self


class SluiceConfig(StrictModel):
    listen: ListenConfig = Field(default_factory=ListenConfig)
    backends: tuple[BackendConfig, ...]
    routes: tuple[RouteConfig, ...] = Field(default_factory=lambda: (RouteConfig(name="default"),))
    priority_classes: tuple[str, ...] = Field(
        ("critical", "standard", "sheddable"), min_length=1, description="most important first"
    )
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    metrics_poll: MetricsPollConfig = Field(default_factory=MetricsPollConfig)
    predictors: PredictorsConfig = Field(default_factory=PredictorsConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    tenants: TenantsConfig = Field(default_factory=TenantsConfig)
    prefix_index: PrefixIndexConfig = Field(default_factory=PrefixIndexConfig)

    @field_validator("backends")
    @classmethod
    def _some_backends(cls, value: tuple[BackendConfig, ...]) -> tuple[BackendConfig, ...]:
        # A field validator (not min_length) so that one bad item is not also reported as "empty".
        if not value:
            raise ValueError("at least one backend is required")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> SluiceConfig:
        names = [b.name for b in self.backends]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"backend names must be unique; repeated: {sorted(dup)}")
        route_names = [r.name for r in self.routes]
        dup = {n for n in route_names if route_names.count(n) > 1}
        if dup:
            raise ValueError(f"route names must be unique; repeated: {sorted(dup)}")
        for route in self.routes:
            if route.priority not in self.priority_classes:
                known = list(self.priority_classes)
                raise ValueError(f"route {route.name!r}: priority {route.priority!r} is not one of {known}")
            for name in route.admission.queue_deadline_ms:
                if name not in self.priority_classes:
                    raise ValueError(f"route {route.name!r}: queue_deadline_ms names unknown class {name!r}")
        claimed = [b.max_priority for b in (self.tenants.default, *self.tenants.budgets.values())]
        claimed += [k.priority for k in self.tenants.api_keys.values()]
        for claim in claimed:
            if claim is not None and claim not in self.priority_classes:
                raise ValueError(f"tenants: priority {claim!r} is not one of {list(self.priority_classes)}")
        return self

    @property
    def models(self) -> tuple[str, ...]:
        """Every model some backend serves, in first-seen order."""
        seen: dict[str, None] = {}
        for backend in self.backends:
            for model in backend.models:
                seen.setdefault(model, None)
        return tuple(seen)

    def route_for(self, path: str, model: str, headers: Mapping[str, str]) -> RouteConfig:
        """First route whose match holds; the built-in default route if none does."""
        for route in self.routes:
            if route.match.matches(path, model, headers):
                return route
        return _DEFAULT_ROUTE


_DEFAULT_ROUTE = RouteConfig(name="default")


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config plus where each of its values came from (for later plugin validation)."""

    config: SluiceConfig
    source: SourceMap


def load_config(path: str | Path) -> LoadedConfig:
    """Load and validate a Sluice config file; raises ``ConfigError`` naming file and line."""
    data, source = load_yaml(path)
    return LoadedConfig(validate(SluiceConfig, data, source), source)


def load_config_text(text: str, path: str = "<string>") -> LoadedConfig:
    data, source = load_yaml_text(text, path)
    return LoadedConfig(validate(SluiceConfig, data, source), source)
