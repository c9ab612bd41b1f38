"""Routing policies registered by the name used in config, each with a strict parameter schema.

A route's ``policy: {name, params}`` is resolved here at start-up. An unknown
name or a bad parameter raises ``ConfigError`` with the config file and line,
so a typo never silently falls back to a default policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.config import PolicyConfig
from core.protocols import RoutingPolicy
from core.yaml_source import ConfigError, Loc, SourceMap, config_error_from_validation, format_loc


class PolicyParams(BaseModel):
    """Base of every policy's parameter schema: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ParamsT = TypeVar("ParamsT", bound=PolicyParams)
Factory = Callable[[Any], RoutingPolicy]


@dataclass(frozen=True, slots=True)
class PolicySpec:
    name: str
    params_model: type[PolicyParams]
    factory: Factory
    summary: str


_REGISTRY: dict[str, PolicySpec] = {}


def register(
    name: str, params: type[ParamsT], summary: str = ""
) -> Callable[[Callable[[ParamsT], RoutingPolicy]], Callable[[ParamsT], RoutingPolicy]]:
    """Register a policy factory under ``name`` (the config name)."""

    def decorator(factory: Callable[[ParamsT], RoutingPolicy]) -> Callable[[ParamsT], RoutingPolicy]:
        if name in _REGISTRY:
            raise ValueError(f"policy {name!r} registered twice")
        _REGISTRY[name] = PolicySpec(name, params, factory, summary)
        return factory

    return decorator


def registered() -> dict[str, PolicySpec]:
    return dict(_REGISTRY)


def build_policy(
    config: PolicyConfig, source: SourceMap | None = None, loc: Loc = ("policy",)
) -> RoutingPolicy:
    """Instantiate the policy a route names, validating its params against the policy's schema."""
    where_path = source.path if source is not None else "<config>"
    spec = _REGISTRY.get(config.name)
    if spec is None:
        line = source.line_of((*loc, "name")) if source is not None else None
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(
            where_path,
            [(line, f"{format_loc((*loc, 'name'))}: unknown policy {config.name!r}; known: {known}")],
        )
    try:
        params = spec.params_model.model_validate(config.params)
    except ValidationError as exc:
        raise config_error_from_validation(exc, source or SourceMap(where_path), (*loc, "params")) from None
    return spec.factory(params)
