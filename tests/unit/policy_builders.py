"""Small builders for policy tests: backend views, request features, routing requests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.features import build_features
from core.types import (
    BackendView,
    Endpoint,
    FleetSnapshot,
    Health,
    Predictions,
    RequestFeatures,
    RoutingRequest,
    SLOTargets,
)

MODEL = "m"


def view(name: str, **overrides: Any) -> BackendView:
    fields: dict[str, Any] = {
        "backend_id": name,
        "models": frozenset({MODEL}),
        "gpu_class": "h100",
        "weight": 1.0,
        "max_concurrency": None,
        "health": Health.READY,
        "in_flight_requests": 0,
        "awaiting_first_byte": 0,
        "in_flight_prompt_tokens": 0,
        "in_flight_predicted_decode_tokens": 0.0,
    }
    fields.update(overrides)
    return BackendView(**fields)


def snapshot(*views: BackendView) -> FleetSnapshot:
    return FleetSnapshot(tuple(views), taken_at_s=0.0)


def features(
    prompt: str = "hello " * 200,
    *,
    request_id: str = "r1",
    model: str = MODEL,
    session: str | None = None,
    max_tokens: int | None = None,
    route: str = "default",
) -> RequestFeatures:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return build_features(
        request_id=request_id,
        endpoint=Endpoint.CHAT,
        body=body,
        route=route,
        tenant="t",
        priority="standard",
        arrival_s=0.0,
        session_key=session,
    )


def request(
    feats: RequestFeatures | None = None,
    *,
    matched: Mapping[str, int] | None = None,
    indexed: Mapping[str, int] | None = None,
    predictions: Predictions | None = None,
    slo: SLOTargets | None = None,
) -> RoutingRequest:
    return RoutingRequest(
        feats if feats is not None else features(),
        prefix_matched_tokens=dict(matched or {}),
        predictions=predictions,
        prefix_indexed_tokens=dict(indexed or {}),
        slo=slo if slo is not None else SLOTargets(),
    )


def ids(views: Sequence[BackendView]) -> list[str]:
    return [v.backend_id for v in views]
