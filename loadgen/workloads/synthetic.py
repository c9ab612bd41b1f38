"""Synthetic workloads: Poisson, Gamma bursts, step overload, spikes, shared-prefix groups.

Lengths follow vLLM's ``random`` dataset: uniform integers in
``[n·(1−range_ratio), n·(1+range_ratio)]`` (``range_ratio`` 0 = fixed).
Prompt text is unique per request (no accidental prefix sharing) except the
system prompts of ``shared_prefix``. ``rate_scale`` multiplies every rate.

* ``poisson``: exponential gaps at ``rate_rps`` for ``span_s``.
* ``gamma``: Gamma gaps with shape ``burstiness`` (vLLM ``--burstiness``; k < 1
  burstier, gap CV = 1/√k) at mean ``rate_rps``.
* ``step``: overload steps given the fleet's ``capacity_rps``: ``levels`` ×
  capacity (default 0.5 → 1 → 3), each held ``step_s``.
* ``spike``: ``base_rps`` with ``spike_factor`` × base for ``spike_s`` starting at
  ``spike_at_s``, then recovery until ``span_s`` (default a 10× spike for 30 s).
* ``shared_prefix``: ``groups`` × ``per_group`` requests (SGLang
  ``generated-shared-prefix`` style); every request of a group starts with the
  same ``system_tokens`` system prompt followed by a unique question; the
  G × P requests are shuffled (seeded) and sent as a Poisson stream at
  ``rate_rps``. The ideal prefix hit ratio is ``(P − 1)/P`` of system-prompt
  tokens, which a cache-aware router can approach and round-robin cannot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from loadgen.workloads.arrivals import RateSegment, piecewise_times, renewal_times, uniform_length
from loadgen.workloads.base import Draft, Message, SourceContext, WorkloadParams, register
from loadgen.workloads.text import chat_content_chars, tokens_to_chars, unique_text


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


FloatList = Annotated[tuple[float, ...], BeforeValidator(_split_csv)]


class LengthParams(WorkloadParams):
    input_tokens: int = Field(1024, ge=1)
    output_tokens: int = Field(128, ge=1)
    range_ratio: float = Field(0.0, ge=0, lt=1)


class PoissonParams(LengthParams):
    rate_rps: float = Field(2.0, gt=0)
    span_s: float = Field(60.0, gt=0)


class GammaParams(PoissonParams):
    burstiness: float = Field(0.5, gt=0, description="Gamma shape k; 1 = Poisson, < 1 burstier")


class StepParams(LengthParams):
    capacity_rps: float = Field(4.0, gt=0, description="the fleet's capacity in requests/s")
    levels: FloatList = Field((0.5, 1.0, 3.0), description="multiples of capacity, comma-separated")
    step_s: float = Field(60.0, gt=0)
    burstiness: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _levels(self) -> StepParams:
        if not self.levels or any(level <= 0 for level in self.levels):
            raise ValueError("levels must be a non-empty list of positive multiples")
        return self


class SpikeParams(LengthParams):
    base_rps: float = Field(2.0, gt=0)
    spike_factor: float = Field(10.0, gt=0)
    spike_at_s: float = Field(60.0, ge=0)
    spike_s: float = Field(30.0, gt=0)
    span_s: float = Field(150.0, gt=0)


class SharedPrefixParams(WorkloadParams):
    groups: int = Field(8, ge=1)
    per_group: int = Field(32, ge=1)
    system_tokens: int = Field(2048, ge=1)
    question_tokens: int = Field(128, ge=1)
    output_tokens: int = Field(256, ge=1)
    range_ratio: float = Field(0.0, ge=0, lt=1)
    rate_rps: float = Field(4.0, gt=0)


def _single(times: Iterator[float], params: LengthParams, ctx: SourceContext, prefix: str) -> Iterator[Draft]:
    rng = ctx.rng("lengths")
    chat = ctx.options.endpoint == "chat"
    for serial, t_s in enumerate(times):
        n_in = uniform_length(rng, params.input_tokens, params.range_ratio)
        n_out = uniform_length(rng, params.output_tokens, params.range_ratio)
        key = f"{prefix}-{serial:06d}"
        n_chars = chat_content_chars(n_in) if chat else tokens_to_chars(n_in)
        yield Draft(key, t_s, unique_text(key, n_chars), n_out, n_in)


@register("poisson", PoissonParams, "synthetic Poisson arrivals, fixed or uniform lengths")
def poisson(params: PoissonParams, ctx: SourceContext) -> Iterator[Draft]:
    rate = params.rate_rps * ctx.options.rate_scale
    return _single(renewal_times(ctx.rng("arrivals"), rate, 0.0, params.span_s), params, ctx, "poisson")


@register("gamma", GammaParams, "synthetic Gamma-burst arrivals (vLLM --burstiness)")
def gamma(params: GammaParams, ctx: SourceContext) -> Iterator[Draft]:
    rate = params.rate_rps * ctx.options.rate_scale
    times = renewal_times(ctx.rng("arrivals"), rate, 0.0, params.span_s, params.burstiness)
    return _single(times, params, ctx, "gamma")


@register("step", StepParams, "step overload: levels x capacity (default 0.5 -> 1 -> 3), step_s each")
def step(params: StepParams, ctx: SourceContext) -> Iterator[Draft]:
    rate = params.capacity_rps * ctx.options.rate_scale
    segments = [RateSegment(params.step_s, level * rate) for level in params.levels]
    return _single(piecewise_times(ctx.rng("arrivals"), segments, params.burstiness), params, ctx, "step")


@register("spike", SpikeParams, "steady load with a spike_factor x spike for spike_s, then recovery")
def spike(params: SpikeParams, ctx: SourceContext) -> Iterator[Draft]:
    base = params.base_rps * ctx.options.rate_scale
    spike_end_s = min(params.span_s, params.spike_at_s + params.spike_s)
    segments = [
        RateSegment(min(params.spike_at_s, params.span_s), base),
        RateSegment(max(0.0, spike_end_s - params.spike_at_s), base * params.spike_factor),
        RateSegment(max(0.0, params.span_s - spike_end_s), base),
    ]
    return _single(piecewise_times(ctx.rng("arrivals"), segments), params, ctx, "spike")


def shared_prefix_prompt(group: int, question_key: str, sys_tokens: int, q_tokens: int, chat: bool) -> Any:
    if chat:
        system = unique_text(f"group {group} system prompt", chat_content_chars(sys_tokens, "system"))
        question = unique_text(question_key, chat_content_chars(q_tokens))
        messages: list[Message] = [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ]
        return messages
    system = unique_text(f"group {group} system prompt", tokens_to_chars(sys_tokens) - 2)
    return system + "\n\n" + unique_text(question_key, tokens_to_chars(q_tokens))


@register("shared_prefix", SharedPrefixParams, "G groups x P requests sharing long system prompts")
def shared_prefix(params: SharedPrefixParams, ctx: SourceContext) -> Iterator[Draft]:
    order = [(g, i) for g in range(params.groups) for i in range(params.per_group)]
    ctx.rng("order").shuffle(order)
    return _shared_drafts(order, params, ctx)


def _shared_drafts(
    order: list[tuple[int, int]], params: SharedPrefixParams, ctx: SourceContext
) -> Iterator[Draft]:
    arrival_rng, length_rng = ctx.rng("arrivals"), ctx.rng("lengths")
    rate = params.rate_rps * ctx.options.rate_scale
    chat = ctx.options.endpoint == "chat"
    t_s = 0.0
    for group, index in order:
        t_s += arrival_rng.expovariate(rate)
        q_tokens = uniform_length(length_rng, params.question_tokens, params.range_ratio)
        n_out = uniform_length(length_rng, params.output_tokens, params.range_ratio)
        key = f"shared-g{group:03d}-{index:05d}"
        prompt = shared_prefix_prompt(group, key, params.system_tokens, q_tokens, chat)
        yield Draft(key, t_s, prompt, n_out, params.system_tokens + q_tokens, session_id=None)
