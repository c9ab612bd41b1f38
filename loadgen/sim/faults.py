"""Fault injection settings of one simulated backend: set in the fleet file, changed at run time.

Faults (all off by default):

- ``slowdown``: multiplies every step time from now on (a throttled or shared GPU).
- ``error_rate`` / ``error_status``: that share of completion requests is answered at once with
  ``error_status`` (429, 500, 502, 503 or 504) and an OpenAI error body, code ``simulated_fault``.
- ``hang``: requests are read but never answered and no engine step starts, ``/health`` included
  (a wedged engine); clearing it resumes the engine and answers what was parked.
- ``crashed``: the listener closes, every connection is dropped, every request and the KV cache are
  lost; clearing it restarts an empty engine on the same port.
- ``refuse_connections``: the listener closes (new connections are refused) while open connections
  and their streams continue; clearing it listens again on the same port.
- ``drop_stream_rate``: that share of requests has its connection dropped mid-response, after a
  uniformly drawn number of tokens (at least one, before the last).

The ``/admin/...`` endpoints keep answering under ``hang`` so a test can clear it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ErrorStatus = Literal[429, 500, 502, 503, 504]


class FaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slowdown: float = Field(1.0, gt=0, le=1000, description="step-time multiplier")
    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: ErrorStatus = 500
    hang: bool = False
    crashed: bool = False
    refuse_connections: bool = False
    drop_stream_rate: float = Field(0.0, ge=0, le=1)

    def apply(self, patch: FaultPatch) -> FaultSpec:
        return self.model_copy(update=patch.model_dump(exclude_none=True))


class FaultPatch(BaseModel):
    """A partial update: fields left out keep their current value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slowdown: float | None = Field(None, gt=0, le=1000)
    error_rate: float | None = Field(None, ge=0, le=1)
    error_status: ErrorStatus | None = None
    hang: bool | None = None
    crashed: bool | None = None
    refuse_connections: bool | None = None
    drop_stream_rate: float | None = Field(None, ge=0, le=1)


class ScheduledFault(BaseModel):
    """Apply ``set`` ``at_s`` seconds after the backend starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at_s: float = Field(ge=0)
    set: FaultPatch
