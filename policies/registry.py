"""Routing policies and pipeline plugins, registered by the name used in config.

Four kinds share one registry: ``policy`` (what a route's ``policy.name``
names), and the pipeline's ``filter``, ``scorer`` and ``picker`` plugins
(what a ``pipeline`` policy's ``filters[].type`` etc. name). Each entry has a
strict pydantic parameter schema (unknown keys are errors) and a factory
``factory(params, ctx)``; ``ctx`` (``BuildContext``) carries the config's
source map and the location of the entry, so a factory that builds nested
plugins reports their errors with the right file and line.

A route's ``policy: {name, params}`` is resolved at start-up. An unknown
name or a bad parameter raises ``ConfigError`` with the config file and line,
so a typo never silently falls back to a default policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.config import PolicyConfig
from core.protocols import RoutingPolicy
from core.yaml_source import ConfigError, Loc, SourceMap, config_error_from_validation, format_loc

PluginKind = Literal["policy", "filter", "scorer", "picker"]


class PolicyParams(BaseModel):
    """Base of every policy's and plugin's parameter schema: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ParamsT = TypeVar("ParamsT", bound=PolicyParams)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BuildContext:
    """Where the entry being built sits in the config, for file:line errors in nested entries."""

    source: SourceMap
    loc: Loc

    def child(self, *parts: str | int) -> BuildContext:
        return BuildContext(self.source, (*self.loc, *parts))

    def error(self, message: str, *parts: str | int) -> ConfigError:
        loc = (*self.loc, *parts)
        return ConfigError(self.source.path, [(self.source.line_of(loc), f"{format_loc(loc)}: {message}")])


@dataclass(frozen=True, slots=True)
class PluginSpec:
    kind: PluginKind
    name: str
    params_model: type[PolicyParams]
    factory: Callable[[Any, BuildContext], Any]
    summary: str


# Backwards-compatible name: a policy's entry is a PluginSpec of kind "policy".
PolicySpec = PluginSpec

_REGISTRY: dict[tuple[PluginKind, str], PluginSpec] = {}


def register_plugin(
    kind: PluginKind, name: str, params: type[ParamsT], summary: str = ""
) -> Callable[[Callable[[ParamsT, BuildContext], T]], Callable[[ParamsT, BuildContext], T]]:
    """Register ``factory(params, ctx)`` as plugin ``name`` of ``kind``."""

    def decorator(factory: Callable[[ParamsT, BuildContext], T]) -> Callable[[ParamsT, BuildContext], T]:
        if (kind, name) in _REGISTRY:
            raise ValueError(f"{kind} {name!r} registered twice")
        _REGISTRY[(kind, name)] = PluginSpec(kind, name, params, factory, summary)
        return factory

    return decorator


def register(
    name: str, params: type[ParamsT], summary: str = ""
) -> Callable[
    [Callable[[ParamsT, BuildContext], RoutingPolicy]], Callable[[ParamsT, BuildContext], RoutingPolicy]
]:
    """Register a routing policy factory under ``name`` (the config name)."""
    return register_plugin("policy", name, params, summary)


def registered(kind: PluginKind = "policy") -> dict[str, PluginSpec]:
    """Every registered entry of ``kind``, by name."""
    return {name: spec for (k, name), spec in _REGISTRY.items() if k == kind}


def build_plugin(
    kind: PluginKind, name: str, params: Mapping[str, Any], ctx: BuildContext, name_loc: Loc, params_loc: Loc
) -> Any:
    """Build plugin ``name`` of ``kind``; errors point at ``ctx.loc + name_loc`` / ``+ params_loc``."""
    spec = _REGISTRY.get((kind, name))
    if spec is None:
        known = ", ".join(sorted(registered(kind)))
        raise ctx.error(f"unknown {kind} {name!r}; known: {known}", *name_loc)
    try:
        validated = spec.params_model.model_validate(params)
    except ValidationError as exc:
        raise config_error_from_validation(exc, ctx.source, (*ctx.loc, *params_loc)) from None
    return spec.factory(validated, ctx.child(*params_loc))


def build_policy(
    config: PolicyConfig, source: SourceMap | None = None, loc: Loc = ("policy",)
) -> RoutingPolicy:
    """Instantiate the policy a route names, validating its params against the policy's schema."""
    ctx = BuildContext(source if source is not None else SourceMap("<config>"), loc)
    policy: RoutingPolicy = build_plugin("policy", config.name, config.params, ctx, ("name",), ("params",))
    return policy
