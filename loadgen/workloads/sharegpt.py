"""``sharegpt``: real ShareGPT conversations replayed as multi-turn sessions whose history grows.

Source: ``sharegpt/sharegpt_v3_first17671.jsonl.gz`` (the standard vLLM/SGLang
benchmark file, split into ≤ 2k-token chunks), one chunk per line:
``{"id", "messages": [{"role", "from", "text", "n_tokens", "n_chars"}]}`` with
``n_tokens`` counted by the mistral-v1 tokenizer.

Each chunk is one session. Turn k sends the conversation so far — every
earlier user message and the *real* assistant reply from the trace, verbatim —
plus the k-th user message; its true output length is the ``n_tokens`` of the
real reply that followed. So turn k+1's prompt is a strict textual extension
of turn k's prompt plus reply, as with a real chat client, and the prefix cache
sees real multi-turn reuse. Normalisation: leading assistant messages of a
continuation chunk are dropped (their context is in an earlier chunk),
consecutive messages of the same role are joined with a blank line, a trailing
user message without a reply is dropped, and chunks without any user→assistant
pair are skipped.

Timing: sessions start by a renewal process (``session_rate_rps``,
``burstiness`` k: Gamma gaps, k = 1 Poisson). Turn k+1 is a dependent request
(``after_request_id`` = turn k) sent ``think_time_s`` after turn k *finishes*;
think times are exponential with mean ``think_time_mean_s``. Its ``arrival_s``
is only a lower bound (start + think times). ``rate_scale`` multiplies the
session rate. Chunks are read lazily in file order starting at
``skip_sessions``, so a short replay reads only the start of the 28 MB file.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from itertools import count
from typing import Any

from pydantic import Field

from loadgen.workloads.arrivals import gap_s
from loadgen.workloads.base import Draft, Message, SourceContext, WorkloadParams, register
from loadgen.workloads.errors import WorkloadError
from loadgen.workloads.files import iter_jsonl, non_negative_int

FILE = "sharegpt/sharegpt_v3_first17671.jsonl.gz"
RECORD_KEYS = ("id", "messages")
MESSAGE_KEYS = {"role", "from", "text", "n_tokens", "n_chars"}
ROLES = {"user", "assistant", "system"}


class ShareGPTParams(WorkloadParams):
    trace: str | None = Field(None, description="JSONL file to read instead of the shared data copy")
    session_rate_rps: float = Field(1.0, gt=0, description="new sessions per second")
    burstiness: float = Field(1.0, gt=0, description="Gamma shape of session gaps (1 = Poisson)")
    think_time_mean_s: float = Field(10.0, ge=0, description="mean user think time between turns")
    max_turns: int | None = Field(None, ge=1, description="keep at most this many turns per session")
    skip_sessions: int = Field(0, ge=0, description="start this many chunks into the file")


def _messages(obj: Mapping[str, Any], path: str, line_no: int) -> list[tuple[str, str, int]]:
    """``(role, text, n_tokens)`` of a record, validated."""
    raw = obj["messages"]
    if not isinstance(obj["id"], str) or not isinstance(raw, list):
        raise WorkloadError("expected 'id' string and 'messages' list", path=path, row=line_no)
    out = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or set(message) != MESSAGE_KEYS:
            raise WorkloadError(
                f"messages[{i}]: expected an object with keys {sorted(MESSAGE_KEYS)}", path=path, row=line_no
            )
        role, text = message["role"], message["text"]
        if role not in ROLES or not isinstance(text, str):
            raise WorkloadError(
                f"messages[{i}]: bad role {role!r} or non-string text", path=path, row=line_no
            )
        try:
            n_tokens = non_negative_int(message["n_tokens"])
        except ValueError as exc:
            raise WorkloadError(f"messages[{i}].n_tokens: {exc}", path=path, row=line_no) from None
        out.append((role, text, n_tokens))
    return out


def normalise(messages: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Drop leading assistant turns, join same-role runs (see module docstring)."""
    start = 0
    while start < len(messages) and messages[start][0] == "assistant":
        start += 1
    merged: list[tuple[str, str, int]] = []
    for role, text, n_tokens in messages[start:]:
        if merged and merged[-1][0] == role:
            _, prev_text, prev_tokens = merged[-1]
            merged[-1] = (role, prev_text + "\n\n" + text, prev_tokens + n_tokens)
        else:
            merged.append((role, text, n_tokens))
    return merged


Turn = tuple[list[Message], int, int]


def session_turns(conv_id: str, messages: list[tuple[str, str, int]], max_turns: int | None) -> list[Turn]:
    """``(prompt messages, true output tokens, prompt tokens)`` for every user→assistant pair."""
    history: list[Message] = []
    history_tokens = 0
    turns: list[Turn] = []
    for i, (role, text, n_tokens) in enumerate(messages):
        if role == "assistant" and i > 0 and messages[i - 1][0] == "user":
            turns.append((list(history), max(1, n_tokens), history_tokens))
            if max_turns is not None and len(turns) >= max_turns:
                break
        history.append({"role": role, "content": text})
        history_tokens += n_tokens
    return turns


def _sessions(params: ShareGPTParams, ctx: SourceContext) -> Iterator[tuple[str, list[Turn]]]:
    """``(conversation id, turns)`` per usable chunk, in file order from ``skip_sessions``."""
    path = ctx.data_file(params.trace, FILE)
    for index, (line_no, obj) in enumerate(iter_jsonl(path, RECORD_KEYS)):
        if index < params.skip_sessions:
            continue
        messages = _messages(obj, str(path), line_no)
        turns = session_turns(str(obj["id"]), normalise(messages), params.max_turns)
        if turns:
            yield str(obj["id"]), turns


def _generate(params: ShareGPTParams, ctx: SourceContext) -> Iterator[Draft]:
    session_rng, think_rng = ctx.rng("sessions"), ctx.rng("think")
    rate_rps = params.session_rate_rps * ctx.options.rate_scale
    end_s = ctx.source_end_s
    pending: list[tuple[float, int, Draft]] = []
    order = count()
    next_start_s = gap_s(session_rng, rate_rps, params.burstiness)
    try:
        for conv_id, turns in _sessions(params, ctx):
            start_s = next_start_s
            next_start_s += gap_s(session_rng, rate_rps, params.burstiness)
            while pending and pending[0][0] <= start_s:
                yield heapq.heappop(pending)[2]
            if end_s is not None and start_s > end_s:
                break
            session, t_s, parent = f"sharegpt-{conv_id}", start_s, None
            for k, (prompt, output_tokens, prompt_tokens) in enumerate(turns):
                mean_s = params.think_time_mean_s
                think_s = think_rng.expovariate(1.0 / mean_s) if parent and mean_s else 0.0
                t_s += think_s
                key = f"{session}-t{k}"
                draft = Draft(key, t_s, prompt, output_tokens, prompt_tokens, None, session, parent, think_s)
                heapq.heappush(pending, (t_s, next(order), draft))
                parent = key
    except WorkloadError:
        # Sessions already read are replayed even when a later line turns out to be corrupt.
        while pending:
            yield heapq.heappop(pending)[2]
        raise
    while pending:
        yield heapq.heappop(pending)[2]


@register(
    "sharegpt", ShareGPTParams, "ShareGPT multi-turn sessions: real text, growing history", chat_only=True
)
def sharegpt(params: ShareGPTParams, ctx: SourceContext) -> Iterator[Draft]:
    return _generate(params, ctx)
