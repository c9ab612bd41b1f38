"""How many tokens a simulated request generates.

Ground truth first: the ``x-sim-output-tokens`` header (``core.headers.SIM_OUTPUT_TOKENS``) carries the
real output length of a trace request, set by the load generator. It is capped, as a real engine would
stop, by ``max_tokens``/``max_completion_tokens`` and by the context left after the prompt
(``max_model_len - prompt_tokens``); a capped request ends with ``finish_reason = "length"``, an
uncapped one with ``"stop"`` (the model emitted its end-of-sequence token). Zero is raised to one: an
engine always samples at least one token.

Without the header the length is drawn from the profile's distribution with the backend's seeded RNG,
so a run is reproducible for a seed and an arrival order: lognormal ``median * exp(sigma * N(0, 1))``
rounded, clipped to ``[1, spec.max_tokens]``, or a fixed ``median``.

Sluice itself never reads this header; only the simulator does.
"""

from __future__ import annotations

import math
import random

from core.errors import InvalidParameter
from core.headers import SIM_OUTPUT_TOKENS
from loadgen.sim.profile import OutputLengthSpec

MAX_HEADER_TOKENS = 10_000_000


def parse_header(value: str | None) -> int | None:
    """The header's token count; ``InvalidParameter`` (400) if it is not a non-negative integer."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > len(str(MAX_HEADER_TOKENS)):
        raise InvalidParameter(
            f"header {SIM_OUTPUT_TOKENS} must be a non-negative integer, got {value[:40]!r}",
            param=SIM_OUTPUT_TOKENS,
        )
    return min(int(text), MAX_HEADER_TOKENS)


def draw(rng: random.Random, spec: OutputLengthSpec) -> int:
    if spec.distribution == "fixed":
        return max(1, min(spec.max_tokens, round(spec.median_tokens)))
    value = spec.median_tokens * math.exp(spec.sigma * rng.gauss(0.0, 1.0))
    return max(1, min(spec.max_tokens, round(value)))


def resolve(
    header_tokens: int | None,
    max_tokens: int | None,
    prompt_tokens: int,
    max_model_len: int,
    rng: random.Random,
    spec: OutputLengthSpec,
) -> tuple[int, str]:
    """``(tokens to generate, finish_reason)`` for one request. Caller ensures the prompt fits."""
    room = max_model_len - prompt_tokens
    cap = room if max_tokens is None else min(max_tokens, room)
    wanted = max(1, header_tokens) if header_tokens is not None else draw(rng, spec)
    if wanted > cap:
        return max(1, cap), "length"
    return wanted, "stop"
