"""One request inside a simulated engine: its sizes, its progress and its timeline.

Token accounting follows vLLM v1: ``num_tokens = prompt_tokens + num_output``; each step computes
``num_new`` tokens; once ``num_computed`` reaches ``num_tokens`` the step samples one new output
token. Preemption (recompute) sets ``num_computed`` back to 0 and keeps the output so far.

Block hashes: block ``i`` of the request holds tokens ``16i .. 16i+15``. Full prompt blocks use the
chained hashes of the prompt text (``core.tokens.prefix_chunk_hashes``, 64 characters = 16
estimated tokens = one block), so equal prompt prefixes share blocks across requests. A block that
contains any output token, or a prompt block the text hashes do not cover (the estimator rounds a
trailing partial chunk up, or multi-byte characters), gets a hash private to this request: it can
only be hit again by this request, after a preemption, as vLLM's recompute would hit its own
cached output blocks.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from enum import Enum
from typing import Protocol

BLOCK = 16
_PRIVATE_INDEX_BITS = 24


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


class RequestListener(Protocol):
    """Receives a request's progress; called by the engine after its state is updated."""

    def on_tokens(self, request: SimRequest, times_s: Sequence[float]) -> None:
        """``len(times_s)`` new output tokens, produced at these engine times."""
        ...

    def on_finished(self, request: SimRequest) -> None: ...


class SimRequest:
    __slots__ = (
        "arrival_s",
        "blocks",
        "cached_tokens",
        "finish_reason",
        "finished_s",
        "first_scheduled_s",
        "first_token_s",
        "listener",
        "num_computed",
        "num_hashed_blocks",
        "num_output",
        "num_preemptions",
        "output_target",
        "prompt_hashes",
        "prompt_tokens",
        "request_id",
        "status",
        "token_times",
        "uid",
    )

    def __init__(
        self,
        request_id: str,
        prompt_tokens: int,
        prompt_hashes: Sequence[int],
        output_target: int,
        *,
        finish_reason: str = "stop",
        listener: RequestListener | None = None,
    ) -> None:
        if prompt_tokens < 1:
            raise ValueError("a request needs at least one prompt token")
        if output_target < 1:
            raise ValueError("a request generates at least one token")
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.prompt_hashes = tuple(prompt_hashes[: prompt_tokens // BLOCK])
        self.output_target = output_target
        self.finish_reason = finish_reason
        self.listener = listener
        self.uid = -1
        self.arrival_s = 0.0
        self.status = Status.WAITING
        self.num_computed = 0
        self.num_output = 0
        self.blocks: list[int] = []
        self.num_hashed_blocks = 0
        self.cached_tokens = -1
        self.num_preemptions = 0
        self.first_scheduled_s: float | None = None
        self.first_token_s: float | None = None
        self.finished_s: float | None = None
        self.token_times = array("d")

    @property
    def num_tokens(self) -> int:
        return self.prompt_tokens + self.num_output

    @property
    def done(self) -> bool:
        return self.status is Status.FINISHED or self.status is Status.ABORTED

    def block_hash(self, index: int) -> int:
        """Hash of full block ``index``: shared prompt hash, or a negative hash private to this request."""
        if index < len(self.prompt_hashes):
            return self.prompt_hashes[index]
        return -1 - ((self.uid << _PRIVATE_INDEX_BITS) | index)

    def lookup_block_count(self) -> int:
        """Full blocks a (re)scheduled request may take from the cache.

        vLLM always recomputes at least the last token, so when the tokens end exactly on a block
        boundary the last full block is not looked up.
        """
        n_full = self.num_tokens // BLOCK
        if n_full * BLOCK == self.num_tokens:
            n_full -= 1
        return n_full

    def itl_s(self) -> list[float]:
        """Gaps between consecutive output tokens (seconds)."""
        t = self.token_times
        return [t[i] - t[i - 1] for i in range(1, len(t))]

    def __repr__(self) -> str:
        return (
            f"SimRequest({self.request_id!r}, prompt={self.prompt_tokens}, out={self.num_output}/"
            f"{self.output_target}, computed={self.num_computed}, {self.status.value})"
        )
