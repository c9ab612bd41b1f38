"""What every workload shares: common options, the draft a source yields, the registry.

A workload source (one module per trace or generator) yields ``Draft`` items
in non-decreasing source time. ``loadgen.workloads.pipeline`` turns drafts
into ``WorkloadRequest``s the same way for every source: start offset, time
scaling, duration and count limits, priority/tenant mixes, and the request
body (model, ``stream``, ``max_tokens``). Sources only decide *what* is asked
and *when* on their own timeline.

Scaling, for every source:

* ``time_scale`` multiplies every source time (arrivals, think times):
  0.5 replays twice as fast, so the rate doubles and the span halves.
* ``rate_scale`` multiplies the request rate at the same span. Generators
  scale their rate parameter; fixed traces keep each row ``stochastic_round
  (rate_scale)`` times (Bernoulli thinning below 1, superposition of
  independent copies above 1; copies get their own prompt text, so a copy is a
  different user with the same lengths and timing).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loadgen.workloads.arrivals import stochastic_round
from loadgen.workloads.errors import WorkloadError

Message = dict[str, str]
DATA_DIR_ENV = "SLUICE_DATA_DIR"


def default_data_dir() -> Path:
    """``$SLUICE_DATA_DIR``, else the nearest ``shared/data`` beside the repository or an ancestor of it."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for ancestor in repo.parents:
        candidate = ancestor / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "data"


class WorkloadOptions(BaseModel):
    """Options every workload accepts (``sluice replay`` flags of the same names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    time_scale: float = Field(1.0, gt=0, description="multiply all source times (0.5 = twice as fast)")
    rate_scale: float = Field(1.0, gt=0, description="multiply the request rate at the same span")
    start_s: float = Field(0.0, ge=0, description="skip this much of the source timeline (unscaled)")
    duration_s: float | None = Field(None, gt=0, description="stop at this replay time (scaled)")
    max_requests: int | None = Field(None, ge=1)
    model: str = Field("llama-3.1-8b", min_length=1)
    endpoint: Literal["chat", "completions"] = "chat"
    max_tokens: Literal["none", "true"] | int = Field(
        "none", description="'none' omits it; 'true' sends the trace's output length; or a fixed cap"
    )
    ignore_eos: bool = Field(False, description="add vLLM's ignore_eos so real engines emit max_tokens")
    priority_mix: dict[str, float] = Field(default_factory=dict, description="class -> weight")
    tenant_mix: dict[str, float] = Field(default_factory=dict, description="tenant -> weight")
    data_dir: Path = Field(default_factory=default_data_dir)

    @field_validator("max_tokens")
    @classmethod
    def _positive_cap(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 'none', 'true' or a positive integer")
        return value

    @field_validator("priority_mix", "tenant_mix")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in value.values()) or (value and sum(value.values()) <= 0):
            raise ValueError("weights must be >= 0 with a positive sum")
        if any(not name for name in value):
            raise ValueError("names must be non-empty")
        return value


class WorkloadParams(BaseModel):
    """Base of each source's own parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(slots=True)
class Draft:
    """One request on the source's own timeline, before the common finishing steps.

    ``prompt`` is plain text (sent as one user message, or as the completions
    ``prompt``) or a full chat message list. ``t_s`` of a dependent turn
    (``after`` set) is a lower bound: the parent's time plus ``think_s``.
    """

    key: str
    t_s: float
    prompt: str | list[Message]
    output_tokens: int
    prompt_tokens: int | None = None
    tenant: str | None = None
    session_id: str | None = None
    after: str | None = None
    think_s: float = 0.0


class SourceContext:
    """What a source may use: the options, seeded RNG streams, files and the replication rule."""

    def __init__(self, options: WorkloadOptions, name: str) -> None:
        self.options = options
        self.name = name

    def rng(self, stream: str) -> random.Random:
        """An independent RNG for ``stream``, fixed by the seed (string seeding is stable across runs)."""
        return random.Random(f"{self.options.seed}:{self.name}:{stream}")

    def data_file(self, override: str | None, relative: str) -> Path:
        return Path(override) if override else self.options.data_dir / relative

    def copies(self, rng: random.Random) -> int:
        """How many times a fixed-trace row is replayed under ``rate_scale``."""
        return stochastic_round(rng, self.options.rate_scale)

    @property
    def source_end_s(self) -> float | None:
        """The last source time that can be replayed, when a duration limit is set."""
        if self.options.duration_s is None:
            return None
        return self.options.start_s + self.options.duration_s / self.options.time_scale


Generate = Callable[[Any, SourceContext], Iterator[Draft]]


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    name: str
    summary: str
    params_model: type[WorkloadParams]
    generate: Generate
    chat_only: bool = False


_REGISTRY: dict[str, WorkloadSpec] = {}


def register(
    name: str, params: type[WorkloadParams], summary: str, *, chat_only: bool = False
) -> Callable[[Generate], Generate]:
    def decorator(generate: Generate) -> Generate:
        if name in _REGISTRY:
            raise ValueError(f"workload {name!r} registered twice")
        _REGISTRY[name] = WorkloadSpec(name, summary, params, generate, chat_only)
        return generate

    return decorator


def registered() -> dict[str, WorkloadSpec]:
    return dict(sorted(_REGISTRY.items()))


def validation_message(exc: ValidationError, what: str) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(value)"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{what} {loc}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_params(spec: WorkloadSpec, raw: Mapping[str, Any]) -> WorkloadParams:
    try:
        return spec.params_model.model_validate(dict(raw))
    except ValidationError as exc:
        raise WorkloadError(validation_message(exc, f"workload {spec.name!r} parameter")) from None


def parse_options(raw: Mapping[str, Any]) -> WorkloadOptions:
    try:
        return WorkloadOptions.model_validate(dict(raw))
    except ValidationError as exc:
        raise WorkloadError(validation_message(exc, "option")) from None
