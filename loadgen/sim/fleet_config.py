"""The fleet file: which simulated backends to run, on which profiles, ports and faults.

Strict like ``core.config``: unknown keys and impossible values stop with ``file:line: message``
(``core.yaml_source``). A backend names a profile (a bundled name or a path relative to the fleet
file), may override profile fields (``overrides: {scheduler: {max_num_seqs: 64}}``; the merged
profile is validated again, errors point at ``overrides``), and may be replicated with ``count``
(names ``<name>-0 .. <name>-<count-1>``, explicit ports counted up from ``port``). Example::

    seed: 7
    backends:
      - name: h100
        profile: h100-llama3.1-8b
        count: 2
      - name: l4
        profile: l4-llama3.1-8b
        faults: {slowdown: 1.5}
        fault_schedule:
          - {at_s: 30, set: {crashed: true}}
          - {at_s: 45, set: {crashed: false}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.config import LoadedConfig, SluiceConfig
from core.yaml_source import (
    ConfigError,
    SourceMap,
    config_error_from_validation,
    format_loc,
    load_yaml,
    load_yaml_text,
    validate,
)
from loadgen.sim.faults import FaultSpec, ScheduledFault
from loadgen.sim.profile import GpuProfile, load_profile, profile_names, profile_path

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimBackendConfig(_Strict):
    name: str
    profile: str = Field(min_length=1, description="bundled profile name or path")
    count: int = Field(1, ge=1, le=256)
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    models: tuple[str, ...] | None = Field(None, description="served model names; default: the profile's")
    overrides: dict[str, Any] = Field(default_factory=dict)
    faults: FaultSpec = Field(default_factory=FaultSpec)
    fault_schedule: tuple[ScheduledFault, ...] = ()
    stream_coalesce_ms: float | None = Field(None, ge=0, le=10_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must be letters, digits, '_', '.', '-'")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or any(not m for m in value)):
            raise ValueError("must list at least one non-empty model name")
        return value

    def expanded_names(self) -> list[str]:
        return [self.name] if self.count == 1 else [f"{self.name}-{i}" for i in range(self.count)]


class FleetConfig(_Strict):
    host: str = "127.0.0.1"
    seed: int = 0
    stream_coalesce_ms: float = Field(0.0, ge=0, le=10_000, description="0 = one SSE event per token")
    backends: tuple[SimBackendConfig, ...]

    @field_validator("backends")
    @classmethod
    def _some(cls, value: tuple[SimBackendConfig, ...]) -> tuple[SimBackendConfig, ...]:
        if not value:
            raise ValueError("at least one backend is required")
        return value

    @model_validator(mode="after")
    def _unique(self) -> FleetConfig:
        names = [n for b in self.backends for n in b.expanded_names()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"backend names must be unique; repeated: {dup}")
        ports = [b.port + i for b in self.backends if b.port for i in range(b.count)]
        dup_ports = sorted({p for p in ports if ports.count(p) > 1})
        if dup_ports:
            raise ValueError(f"ports must be unique; repeated: {dup_ports}")
        if any(p > 65535 for p in ports):
            raise ValueError("a replicated backend's ports run past 65535")
        return self


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One backend to run, with its profile resolved and overrides applied."""

    name: str
    profile: GpuProfile
    models: tuple[str, ...]
    port: int
    faults: FaultSpec
    fault_schedule: tuple[ScheduledFault, ...]
    stream_coalesce_ms: float
    seed: int


@dataclass(frozen=True, slots=True)
class Fleet:
    config: FleetConfig
    backends: tuple[BackendSpec, ...]
    source: SourceMap


def _profile_file(name: str, base_dir: Path) -> Path | None:
    """A bundled profile by name, else a path relative to the fleet file, else as given."""
    for candidate in (profile_path(name), base_dir / name, Path(name)):
        if candidate.is_file():
            return candidate
    return None


def _resolve_profile(cfg: SimBackendConfig, index: int, base_dir: Path, source: SourceMap) -> GpuProfile:
    loc = ("backends", index)
    path = _profile_file(cfg.profile, base_dir)
    if path is None:
        known = ", ".join(profile_names())
        where = source.line_of((*loc, "profile"))
        msg = f"{format_loc((*loc, 'profile'))}: no such profile {cfg.profile!r}; bundled: {known}"
        raise ConfigError(source.path, [(where, msg)])
    profile = load_profile(str(path))  # a broken profile file reports its own file and line
    if not cfg.overrides:
        return profile
    try:
        return profile.with_overrides(cfg.overrides)
    except ValidationError as exc:
        raise config_error_from_validation(exc, source, (*loc, "overrides")) from None


def resolve(config: FleetConfig, source: SourceMap, base_dir: Path) -> Fleet:
    specs: list[BackendSpec] = []
    for index, cfg in enumerate(config.backends):
        profile = _resolve_profile(cfg, index, base_dir, source)
        models = cfg.models or (profile.model.name,)
        coalesce = cfg.stream_coalesce_ms if cfg.stream_coalesce_ms is not None else config.stream_coalesce_ms
        for i, name in enumerate(cfg.expanded_names()):
            specs.append(
                BackendSpec(
                    name=name,
                    profile=profile,
                    models=models,
                    port=cfg.port + i if cfg.port else 0,
                    faults=cfg.faults,
                    fault_schedule=cfg.fault_schedule,
                    stream_coalesce_ms=coalesce,
                    seed=config.seed * 1_000_003 + len(specs),
                )
            )
    return Fleet(config, tuple(specs), source)


def sluice_config(
    fleet: Fleet, urls: Mapping[str, str], base: Mapping[str, Any] | None = None, proxy_port: int = 8080
) -> dict[str, Any]:
    """A Sluice config mapping (``core.config``) whose backends are this fleet's, at ``urls[name]``.

    ``base`` supplies everything else (routes, policies, timeouts, ...); its ``backends`` are replaced.
    """
    out: dict[str, Any] = {"listen": {"host": "127.0.0.1", "port": proxy_port}, **(base or {})}
    out["backends"] = [
        {
            "name": b.name,
            "url": urls[b.name],
            "models": list(b.models),
            "gpu": b.profile.gpu,
            "metrics_format": "vllm",
        }
        for b in fleet.backends
    ]
    return out


def virtual_sluice_config(fleet: Fleet, base: Mapping[str, Any] | None = None) -> LoadedConfig:
    """The validated Sluice config the virtual-time fleet decides with (backends at placeholder URLs)."""
    urls = {b.name: f"http://{b.name}.virtual" for b in fleet.backends}
    mapping = sluice_config(fleet, urls, base)
    source = SourceMap("<virtual fleet>")
    try:
        return LoadedConfig(SluiceConfig.model_validate(mapping), source)
    except ValidationError as exc:
        raise config_error_from_validation(exc, source) from None


def load_fleet(path: str | Path) -> Fleet:
    """Load, validate and resolve a fleet file; ``ConfigError`` names the file and line."""
    data, source = load_yaml(path)
    return resolve(validate(FleetConfig, data, source), source, Path(path).resolve().parent)


def load_fleet_text(text: str, path: str = "<string>", base_dir: Path | None = None) -> Fleet:
    data, source = load_yaml_text(text, path)
    return resolve(validate(FleetConfig, data, source), source, base_dir or Path.cwd())
