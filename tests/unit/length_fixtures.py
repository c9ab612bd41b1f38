"""Small synthetic training sets for the output-length tests (hermetic: no shared data needed)."""

from __future__ import annotations

import random

from core.features import build_features
from core.types import Endpoint, Outcome, RequestFeatures
from predictors.training_data import LengthSample

LONG_TASKS = ("write a detailed essay about", "explain step by step how", "write a long story about")
SHORT_TASKS = ("what is the capital of", "answer yes or no:", "give one word for")
TOPICS = ("rivers", "the moon", "python lists", "roman roads", "tea", "volcanoes", "jazz", "chess")


def chat_features(
    text: str,
    model: str = "m",
    *,
    tenant: str = "t",
    route: str = "default",
    max_tokens: int | None = None,
    history: list[dict[str, object]] | None = None,
    endpoint: Endpoint = Endpoint.CHAT,
) -> RequestFeatures:
    body: dict[str, object] = {
        "model": model,
        "messages": [*(history or []), {"role": "user", "content": text}],
    }
    if endpoint is not Endpoint.CHAT:
        body = {"model": model, "prompt": text}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return build_features(
        request_id="r",
        endpoint=endpoint,
        body=body,
        route=route,
        tenant=tenant,
        priority="standard",
        arrival_s=0.0,
    )


def synthetic_samples(
    n: int, seed: int = 0, models: tuple[str, ...] = ("terse", "verbose")
) -> list[LengthSample]:
    """Long tasks answer ~400 tokens, short ones ~20; model "verbose" doubles; log-normal noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        long_task = rng.random() < 0.5
        task = rng.choice(LONG_TASKS if long_task else SHORT_TASKS)
        model = rng.choice(models)
        base = 400.0 if long_task else 20.0
        if model == "verbose":
            base *= 2.0
        tokens = max(1, int(base * rng.lognormvariate(0.0, 0.4)))
        text = f"{task} {rng.choice(TOPICS)} {rng.choice(TOPICS)}"
        out.append(LengthSample(chat_features(text, model), tokens, "synthetic", f"g{i // 3}"))
    return out


def length_outcome(tokens: int, tenant: str = "t", status: int = 200, cancelled: bool = False) -> Outcome:
    """A finished request of model ``terse`` with ``tokens`` output tokens (for the online learners)."""
    return Outcome(
        request_id="r",
        backend_id="b",
        route="default",
        model="terse",
        tenant=tenant,
        status_code=status,
        prompt_tokens=10,
        output_tokens=tokens,
        cached_prompt_tokens=None,
        ttft_ms=10.0,
        e2e_ms=100.0,
        cancelled=cancelled,
    )


# Cue words the offline model never saw: it cannot tell these prompts apart, a stream of outcomes can.
NEW_LONG = ("compose a thorough treatise on", "elaborate exhaustively regarding")
NEW_SHORT = ("reply tersely about", "one syllable regarding")


def unseen_cue_stream(n: int, seed: int) -> list[tuple[str, int]]:
    """Prompts with unseen cue words: long ones answer ~300 tokens, short ones ~15 (log-normal noise)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        is_long = rng.random() < 0.5
        cue = rng.choice(NEW_LONG if is_long else NEW_SHORT)
        tokens = max(1, int((300.0 if is_long else 15.0) * rng.lognormvariate(0.0, 0.4)))
        out.append((f"{cue} {rng.choice(TOPICS)}", tokens))
    return out
