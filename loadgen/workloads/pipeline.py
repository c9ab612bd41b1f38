"""Turn a source's drafts into ``WorkloadRequest``s, identically for every source.

Steps, in order, for each draft (sources yield drafts in non-decreasing
source time; a violation is a bug in the source and raises):

1. drop drafts before ``start_s`` (and the later turns of their sessions);
2. ``arrival_s = (t_s − start_s) · time_scale``; think times scale alike;
3. stop at the first draft past ``duration_s`` or after ``max_requests``;
4. priority and tenant from the mixes, drawn once per session (or request)
   from an RNG keyed by the seed and that id, so the assignment does not
   depend on which other requests were generated; a tenant set by the source
   (ServeGen clients) is kept;
5. the body: ``model``, ``stream: true`` with ``stream_options.include_usage``,
   ``max_tokens`` per the ``max_tokens`` option, ``ignore_eos`` if asked.

``true_output_tokens`` is the trace's output length and travels to the
simulated backends in ``x-sim-output-tokens`` (``WorkloadRequest.http_headers``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

from core.types import Endpoint
from loadgen.workload import WorkloadRequest
from loadgen.workloads.base import Draft, Message, WorkloadOptions
from loadgen.workloads.errors import WorkloadError


def _pick(rng: random.Random, mix: Mapping[str, float]) -> str:
    names = list(mix)
    return rng.choices(names, weights=[mix[n] for n in names], k=1)[0]


def _messages(prompt: str | list[Message]) -> list[Message]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return prompt


def build_body(draft: Draft, options: WorkloadOptions) -> dict[str, Any]:
    body: dict[str, Any] = {"model": options.model}
    if options.endpoint == "chat":
        body["messages"] = _messages(draft.prompt)
    else:
        if not isinstance(draft.prompt, str):
            raise WorkloadError("this workload produces chat conversations; use --endpoint chat")
        body["prompt"] = draft.prompt
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    if options.max_tokens == "true":
        body["max_tokens"] = draft.output_tokens
    elif isinstance(options.max_tokens, int):
        body["max_tokens"] = options.max_tokens
    if options.ignore_eos:
        body["ignore_eos"] = True
    return body


class _Mixer:
    """Per-session class/tenant assignment from the configured mixes."""

    def __init__(self, options: WorkloadOptions) -> None:
        self._options = options
        self._by_group: dict[str, tuple[str, str | None]] = {}

    def assign(self, draft: Draft) -> tuple[str, str]:
        group = draft.session_id or draft.key
        cached = self._by_group.get(group)
        if cached is None:
            rng = random.Random(f"{self._options.seed}:mix:{group}")
            priority = _pick(rng, self._options.priority_mix) if self._options.priority_mix else "standard"
            tenant = _pick(rng, self._options.tenant_mix) if self._options.tenant_mix else None
            cached = (priority, tenant)
            if draft.session_id is not None:
                self._by_group[group] = cached
        priority, mixed_tenant = cached
        tenant = draft.tenant or mixed_tenant or "default"
        return priority, tenant


def finish(drafts: Iterator[Draft], options: WorkloadOptions, source: str) -> Iterator[WorkloadRequest]:
    endpoint = Endpoint.CHAT if options.endpoint == "chat" else Endpoint.COMPLETIONS
    mixer = _Mixer(options)
    dropped: set[str] = set()
    emitted = 0
    last_t_s = float("-inf")
    for draft in drafts:
        if draft.t_s < last_t_s:
            raise RuntimeError(f"workload {source!r} yielded {draft.key!r} out of time order")
        last_t_s = draft.t_s
        if draft.t_s < options.start_s or (draft.after is not None and draft.after in dropped):
            dropped.add(draft.key)
            continue
        arrival_s = (draft.t_s - options.start_s) * options.time_scale
        if options.duration_s is not None and arrival_s > options.duration_s:
            return
        priority, tenant = mixer.assign(draft)
        yield WorkloadRequest(
            request_id=draft.key,
            arrival_s=arrival_s,
            endpoint=endpoint,
            body=build_body(draft, options),
            true_output_tokens=draft.output_tokens,
            tenant=tenant,
            priority=priority,
            session_id=draft.session_id,
            after_request_id=draft.after,
            think_time_s=draft.think_s * options.time_scale,
            source=source,
            trace_prompt_tokens=draft.prompt_tokens,
        )
        emitted += 1
        if options.max_requests is not None and emitted >= options.max_requests:
            return
