"""The request a workload produces, consumed by the real-time replay client and the virtual-time fleet.

A workload is an iterable of ``WorkloadRequest`` sorted by ``arrival_s``. The
same objects drive a real HTTP replay (``sluice replay``) and a virtual-time
simulation (``sluice bench``), so both see identical bodies, headers and
ground-truth output lengths.

Dependent requests model multi-turn sessions: a request with
``after_request_id`` is sent ``think_time_s`` after that earlier request
finishes (its ``arrival_s`` is then only a lower bound). Session arrivals stay
open-loop; only turns within a session wait for each other, as real users do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from core import headers
from core.types import Endpoint

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class WorkloadRequest:
    request_id: str
    arrival_s: float
    endpoint: Endpoint
    body: Mapping[str, Any]
    true_output_tokens: int
    tenant: str = "default"
    priority: str = "standard"
    session_id: str | None = None
    after_request_id: str | None = None
    think_time_s: float = 0.0
    source: str = ""
    trace_prompt_tokens: int | None = None
    extra_headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)

    @property
    def path(self) -> str:
        return {
            Endpoint.CHAT: "/v1/chat/completions",
            Endpoint.COMPLETIONS: "/v1/completions",
            Endpoint.EMBEDDINGS: "/v1/embeddings",
        }[self.endpoint]

    def http_headers(self) -> dict[str, str]:
        """Headers the load client sends: identity, class, tenant and the simulator's ground truth."""
        out = {
            headers.REQUEST_ID: self.request_id,
            headers.TENANT: self.tenant,
            headers.PRIORITY: self.priority,
            headers.SIM_OUTPUT_TOKENS: str(self.true_output_tokens),
        }
        if self.session_id is not None:
            out[headers.SESSION] = self.session_id
        out.update(self.extra_headers)
        return out
