"""A tiny iteration-level engine with known speeds, to test the latency model without the full simulator.

Each backend runs vLLM-like steps: a step prefills the head of the waiting
queue (uncached tokens, up to ``chunk_tokens``) and decodes one token for
every running request; it lasts ``b0 + b1 * prefill tokens + b2 * decode
tokens`` ms (the BLIS form, formulas.md §9) times a small seeded jitter. A
request's first token comes at the end of the step that finishes its
prefill. Requests arrive Poisson per backend; the ``BackendView`` each sees at
dispatch is built from the engine's state exactly as Sluice's accounting would
(awaiting first byte, in-flight prompt tokens, remaining decode tokens).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field, replace

from core.features import build_features
from core.types import BackendView, Endpoint, Health, Outcome
from predictors.latency_eval import LatencySample


@dataclass(frozen=True)
class Speed:
    b0_ms: float
    b1_ms_per_token: float
    b2_ms_per_token: float


H100 = Speed(5.75, 0.0173, 0.0060)
A100 = Speed(16.4, 0.0478, 0.0182)


@dataclass
class _Req:
    rid: int
    arrival_ms: float
    prompt_tokens: int
    matched_tokens: int
    output_tokens: int
    view: BackendView
    prefill_left: int = 0
    generated: int = 0
    first_ms: float | None = None


@dataclass
class _Engine:
    name: str
    speed: Speed
    waiting: deque[_Req] = field(default_factory=deque)
    running: list[_Req] = field(default_factory=list)

    def view(self) -> BackendView:
        awaiting = list(self.waiting)
        everyone = awaiting + self.running
        return BackendView(
            backend_id=self.name,
            models=frozenset({"m"}),
            gpu_class="unknown",
            weight=1.0,
            max_concurrency=None,
            health=Health.READY,
            in_flight_requests=len(everyone),
            awaiting_first_byte=len(awaiting),
            in_flight_prompt_tokens=sum(r.prompt_tokens for r in everyone),
            in_flight_predicted_decode_tokens=float(sum(r.output_tokens - r.generated for r in everyone)),
            awaiting_prompt_tokens=sum(r.prompt_tokens for r in awaiting),
        )


def run_queue(
    speeds: dict[str, Speed],
    rate_per_s: float,
    n_per_backend: int,
    seed: int = 0,
    chunk_tokens: int = 2048,
    jitter_frac: float = 0.05,
) -> list[LatencySample]:
    """Samples in completion order, each with its dispatch-time view and true outcome."""
    rng = random.Random(seed)
    samples: list[tuple[float, LatencySample]] = []
    for name, speed in speeds.items():
        engine = _Engine(name, speed)
        arrivals: deque[float] = deque()
        t_ms = 0.0
        for _ in range(n_per_backend):
            t_ms += rng.expovariate(rate_per_s) * 1000.0
            arrivals.append(t_ms)
        now_ms = 0.0
        rid = 0
        done = 0
        while done < n_per_backend:
            if not engine.waiting and not engine.running and arrivals:
                now_ms = max(now_ms, arrivals[0])
            while arrivals and arrivals[0] <= now_ms:
                arrival = arrivals.popleft()
                prompt = int(rng.lognormvariate(6.5, 0.8)) + 16
                matched = int(prompt * rng.choice((0.0, 0.0, 0.3, 0.6)))
                req = _Req(rid, arrival, prompt, matched, rng.randint(8, 120), engine.view())
                req.prefill_left = prompt - matched
                engine.waiting.append(req)
                rid += 1
            prefill = 0
            budget = chunk_tokens - len(engine.running)
            head = engine.waiting[0] if engine.waiting else None
            if head is not None:
                prefill = min(head.prefill_left, max(budget, 1))
            step_ms = (
                speed.b0_ms + speed.b1_ms_per_token * prefill + speed.b2_ms_per_token * len(engine.running)
            )
            now_ms += step_ms * (1.0 + rng.uniform(-jitter_frac, jitter_frac))
            for req in list(engine.running):
                req.generated += 1
                if req.generated >= req.output_tokens:
                    engine.running.remove(req)
                    samples.append((now_ms, _sample(name, req, now_ms)))
                    done += 1
            if head is not None:
                head.prefill_left -= prefill
                if head.prefill_left <= 0:
                    engine.waiting.popleft()
                    head.first_ms = now_ms
                    head.generated = 1
                    engine.running.append(head)
    samples.sort(key=lambda pair: pair[0])
    return [s for _, s in samples]


def _sample(backend: str, req: _Req, end_ms: float) -> LatencySample:
    assert req.first_ms is not None
    text = "x" * (4 * req.prompt_tokens)
    features = build_features(
        request_id=str(req.rid),
        endpoint=Endpoint.CHAT,
        body={"model": "m", "messages": [{"role": "user", "content": text}]},
        route="default",
        tenant="t",
        priority="standard",
        arrival_s=req.arrival_ms / 1000.0,
    )
    # The chat rendering adds a few characters: pin the prompt size to the engine's count.
    features = replace(features, prompt_tokens=req.prompt_tokens)
    outcome = Outcome(
        request_id=str(req.rid),
        backend_id=backend,
        route="default",
        model="m",
        tenant="t",
        status_code=200,
        prompt_tokens=req.prompt_tokens,
        output_tokens=req.output_tokens,
        cached_prompt_tokens=req.matched_tokens,
        ttft_ms=req.first_ms - req.arrival_ms,
        e2e_ms=end_ms - req.arrival_ms,
    )
    return LatencySample(req.view, features, req.matched_tokens, outcome)
