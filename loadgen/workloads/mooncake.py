"""``mooncake_conversation`` / ``mooncake_synthetic``: Kimi traces whose prefix blocks become shared text.

Source: ``mooncake/{conversation,synthetic}_trace.jsonl.gz`` (Apache-2.0), one
JSON object per line: ``timestamp`` (ms from trace start), ``input_length``,
``output_length`` (tokens) and ``hash_ids``, the remapped hashes of the
prompt's consecutive 512-token blocks (``len(hash_ids) == ceil(input/512)``).

Prompt text: block ``h`` becomes ``block_text(h)``, 2,048 characters (512
estimated tokens) that depend only on ``h``; the prompt is the blocks in order,
the last one cut so the whole prompt estimates to ``input_length`` tokens. So
two requests whose ``hash_ids`` agree on the first k blocks share their first
k × 2,048 characters, and any backend's prefix cache sees the trace's real
sharing (README: 36.6 % of blocks hit in ``conversation``, 64.0 % in
``synthetic``). Under ``rate_scale`` > 1 each extra copy salts its block
texts, i.e. it is an independent population with the same sharing structure.

Timing: ``conversation`` timestamps are quantised to 3 s buckets (10 requests
per bucket on average). Sending a bucket at one instant would create bursts
the real service never saw, so each request is moved to ``t + U(0,
bucket_spread_s)`` with a seeded RNG and the trace re-sorted
(``bucket_spread_s`` defaults to 3.0 for ``conversation``, 0 for ``synthetic``,
whose timestamps are already Poisson at 1 ms resolution).

Rows (numbers and ids) are parsed eagerly; text is generated per request as the
replay reaches it, with repeated blocks served from a bounded cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from core.tokens import CHARS_PER_TOKEN
from loadgen.workloads.base import Draft, SourceContext, WorkloadParams, register
from loadgen.workloads.errors import WorkloadError
from loadgen.workloads.files import iter_jsonl, non_negative_int, parse_field
from loadgen.workloads.text import CHAT_FRAMING_CHARS, block_text

BLOCK_TOKENS = 512
KEYS = ("timestamp", "input_length", "output_length", "hash_ids")
FILES = {
    "conversation": "mooncake/conversation_trace.jsonl.gz",
    "synthetic": "mooncake/synthetic_trace.jsonl.gz",
}
DEFAULT_SPREAD_S = {"conversation": 3.0, "synthetic": 0.0}


@dataclass(frozen=True, slots=True)
class MooncakeRow:
    index: int
    t_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...]


class MooncakeParams(WorkloadParams):
    trace: str | None = Field(None, description="JSONL file to read instead of the shared data copy")
    bucket_spread_s: float | None = Field(None, ge=0, description="spread each timestamp over this window")


def _hash_ids(value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of integers")
    return tuple(non_negative_int(v) for v in value)


def read_rows(path: Path) -> list[MooncakeRow]:
    rows: list[MooncakeRow] = []
    for line_no, obj in iter_jsonl(path, KEYS):
        t_ms = parse_field(obj, "timestamp", non_negative_int, path, line_no)
        n_in = parse_field(obj, "input_length", non_negative_int, path, line_no)
        n_out = parse_field(obj, "output_length", non_negative_int, path, line_no)
        ids = parse_field(obj, "hash_ids", _hash_ids, path, line_no)
        if len(ids) != math.ceil(n_in / BLOCK_TOKENS):
            raise WorkloadError(
                f"hash_ids has {len(ids)} blocks but input_length {n_in} needs "
                f"ceil({n_in}/{BLOCK_TOKENS}) = {math.ceil(n_in / BLOCK_TOKENS)}",
                path=str(path),
                row=line_no,
            )
        rows.append(MooncakeRow(len(rows), t_ms / 1000.0, max(1, n_in), max(1, n_out), ids))
    if not rows:
        raise WorkloadError("no data rows", path=str(path))
    return rows


def prompt_text(row: MooncakeRow, salt: str, chat: bool) -> str:
    """The prompt for ``row``: block texts in order, cut to ``input_length`` estimated tokens."""
    block_chars = BLOCK_TOKENS * CHARS_PER_TOKEN
    total_chars = row.input_tokens * CHARS_PER_TOKEN
    if chat:
        total_chars = max(1, total_chars - CHAT_FRAMING_CHARS)
    text = "".join(block_text(h, salt, block_chars) for h in row.hash_ids)
    return text[:total_chars]


def _generate(kind: str, params: MooncakeParams, ctx: SourceContext) -> Iterator[Draft]:
    rows = read_rows(ctx.data_file(params.trace, FILES[kind]))
    spread_s = DEFAULT_SPREAD_S[kind] if params.bucket_spread_s is None else params.bucket_spread_s
    return _drafts(kind, rows, spread_s, ctx)


def _drafts(kind: str, rows: list[MooncakeRow], spread_s: float, ctx: SourceContext) -> Iterator[Draft]:
    spread_rng = ctx.rng("spread")
    copy_rng = ctx.rng("copies")
    timed = []
    for row in rows:
        for copy in range(ctx.copies(copy_rng)):
            jitter_s = spread_rng.uniform(0.0, spread_s) if spread_s > 0 else 0.0
            timed.append((row.t_s + jitter_s, row.index, copy, row))
    timed.sort(key=lambda item: (item[0], item[1], item[2]))
    chat = ctx.options.endpoint == "chat"
    for t_s, index, copy, row in timed:
        key = f"mooncake-{kind}-{index:06d}" + (f"-c{copy}" if copy else "")
        salt = f"c{copy}:" if copy else ""
        yield Draft(key, t_s, prompt_text(row, salt, chat), row.output_tokens, row.input_tokens)


@register(
    "mooncake_conversation", MooncakeParams, "Mooncake conversation trace: real prefix sharing (hash_ids)"
)
def mooncake_conversation(params: MooncakeParams, ctx: SourceContext) -> Iterator[Draft]:
    return _generate("conversation", params, ctx)


@register("mooncake_synthetic", MooncakeParams, "Mooncake synthetic trace: public prompts, Poisson arrivals")
def mooncake_synthetic(params: MooncakeParams, ctx: SourceContext) -> Iterator[Draft]:
    return _generate("synthetic", params, ctx)
