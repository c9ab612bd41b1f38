"""The benchmark matrix file (``configs/bench/*.yaml``): policies x workloads x fleets x loads x seeds.

Validated strictly like every Sluice config: unknown keys, impossible values, unknown policies or
policy parameters, unknown workloads or workload parameters and broken fleet files all stop with
``file:line: message`` (``core.yaml_source``) before anything runs. Example::

    name: issue6
    seeds: [1, 2, 3, 4, 5]
    duration_s: 600            # replay seconds per point
    warmup_s: 60               # left out of every statistic
    slo: {ttft_ms: 2000, tpot_ms: 100}
    load_levels: [0.7, 0.9]    # fractions of each fleet's capacity for each workload
    capacity: {target_frac: 0.9, duration_s: 300}
    fleets:
      - {name: hetero-6, file: ../fleets/hetero-6.yaml}     # relative to this file
    workloads:
      - {name: azure_conv, workload: azure_conv, scale_by: time}
      - {name: sharegpt, workload: sharegpt, params: {max_turns: 8}, capacity_rps: {hetero-6: 30}}
    policies:
      - {name: round_robin, role: baseline}
      - {name: oracle, role: oracle}
    reference: round_robin     # the label ratios "vs round_robin" are taken against
    sluice: {admission: {enabled: false}}   # base Sluice config of every point (no backends)

A workload reaches each offered rate by ``scale_by``: ``rate`` (default; generators such as ShareGPT
sessions draw more arrivals, fixed traces superpose copies) or ``time`` (fixed traces: the timeline is
compressed, copies only beyond what the trace's span allows; ``scaling.scaling_for``).

A policy entry's ``label`` (default: its name) names it in results; ``role`` says what it is
compared as: ``baseline`` (a candidate for "best baseline"), ``candidate`` (Sluice's own) or
``oracle``. The policy is set on every route of ``sluice`` (one ``default`` route if it has none);
routes without an ``slo`` get the matrix's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.config import LoadedConfig, SluiceConfig
from core.yaml_source import (
    ConfigError,
    SourceMap,
    config_error_from_validation,
    format_loc,
    load_yaml,
    validate,
)
from loadgen.bench.policies import check_policy, config_policy
from loadgen.results import SLO
from loadgen.sim.fleet_config import Fleet, load_fleet, sluice_config
from loadgen.workloads import Workload, WorkloadError, build_workload

_BENCH_OPTIONS = ("seed", "rate_scale", "duration_s", "max_requests")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLOSpec(_Strict):
    ttft_ms: float | None = Field(None, gt=0)
    tpot_ms: float | None = Field(None, gt=0)
    e2e_ms: float | None = Field(None, gt=0)

    def to_slo(self) -> SLO:
        return SLO(self.ttft_ms, self.tpot_ms, self.e2e_ms)


class CapacitySpec(_Strict):
    """How a fleet's capacity for a workload is found (``loadgen.bench.capacity``)."""

    target_frac: float = Field(0.9, gt=0, le=1, description="SLO attainment a backend must keep")
    duration_s: float = Field(300.0, gt=0, description="replay seconds per search run")
    warmup_s: float = Field(30.0, ge=0)
    rel_tol: float = Field(0.05, gt=0, le=1, description="stop when the bracket hi/lo <= 1 + rel_tol")
    max_runs: int = Field(30, ge=2, le=200)
    seed: int | None = Field(None, description="workload seed of the search; default: the first seed")


class FleetEntry(_Strict):
    name: str = Field(min_length=1)
    file: str = Field(min_length=1, description="fleet file, relative to the matrix file")


class WorkloadEntry(_Strict):
    name: str = Field(min_length=1, description="label in results")
    workload: str = Field(min_length=1, description="a registered workload (`sluice workloads`)")
    params: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict, description="workload options except seed/rates")
    scale_by: Literal["rate", "time"] = Field(
        "rate", description="rate: more arrivals at the same span; time: compress a fixed trace's timeline"
    )
    capacity_rps: dict[str, float] = Field(default_factory=dict, description="fleet name -> fixed capacity")

    @field_validator("options")
    @classmethod
    def _not_bench_owned(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = sorted(set(value) & set(_BENCH_OPTIONS))
        if owned:
            raise ValueError(f"{', '.join(owned)} are set by the matrix (seeds, load_levels, duration_s)")
        return value

    @field_validator("capacity_rps")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        if any(v <= 0 for v in value.values()):
            raise ValueError("capacities must be > 0")
        return value


class PolicyEntry(_Strict):
    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(None, min_length=1)
    role: Literal["baseline", "candidate", "oracle"] = "baseline"

    @property
    def key(self) -> str:
        return self.label or self.name


def _unique(names: Sequence[str | int], what: str) -> None:
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise ValueError(f"{what} must be unique; repeated: {dup}")


class MatrixSpec(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    seeds: tuple[int, ...] = Field(min_length=1)
    duration_s: float = Field(gt=0)
    warmup_s: float = Field(0.0, ge=0)
    slo: SLOSpec
    load_levels: tuple[float, ...] = Field(min_length=1)
    capacity: CapacitySpec = Field(default_factory=CapacitySpec)
    fleets: tuple[FleetEntry, ...] = Field(min_length=1)
    workloads: tuple[WorkloadEntry, ...] = Field(min_length=1)
    policies: tuple[PolicyEntry, ...] = Field(min_length=1)
    reference: str = "round_robin"
    sluice: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> MatrixSpec:
        if self.slo.ttft_ms is None and self.slo.tpot_ms is None and self.slo.e2e_ms is None:
            raise ValueError("slo needs at least one bound (goodput and capacity are defined by it)")
        if self.warmup_s >= self.duration_s:
            raise ValueError("warmup_s must be shorter than duration_s")
        if any(x <= 0 for x in self.load_levels):
            raise ValueError("load_levels are fractions of capacity and must be > 0")
        _unique(list(self.seeds), "seeds")
        _unique([f.name for f in self.fleets], "fleet names")
        _unique([w.name for w in self.workloads], "workload names")
        _unique([p.key for p in self.policies], "policy labels")
        if self.reference not in {p.key for p in self.policies}:
            raise ValueError(f"reference {self.reference!r} is not one of the policies' labels")
        if "backends" in self.sluice:
            raise ValueError("sluice.backends comes from each fleet file; remove it")
        return self


@dataclass(frozen=True, slots=True)
class Matrix:
    """A validated matrix with its fleets resolved and its workloads built (at rate scale 1)."""

    spec: MatrixSpec
    path: str
    fleets: dict[str, Fleet]
    workloads: dict[str, Workload]

    @property
    def policies(self) -> tuple[PolicyEntry, ...]:
        return self.spec.policies


def point_config(matrix: Matrix, fleet: str, policy: PolicyEntry) -> LoadedConfig:
    """The Sluice config one point decides with: the matrix's ``sluice`` block, this policy, this fleet."""
    base = dict(matrix.spec.sluice)
    slo = matrix.spec.slo.model_dump(exclude_none=True)
    policy_map = config_policy(policy.name, policy.params)
    routes = base.get("routes") or [{"name": "default"}]
    base["routes"] = [{**r, "policy": policy_map, "slo": r.get("slo", slo)} for r in routes]
    urls = {b.name: f"http://{b.name}.virtual" for b in matrix.fleets[fleet].backends}
    source = SourceMap(f"{matrix.path} (point {fleet}/{policy.key})")
    try:
        return LoadedConfig(
            SluiceConfig.model_validate(sluice_config(matrix.fleets[fleet], urls, base)), source
        )
    except ValidationError as exc:
        raise config_error_from_validation(exc, source) from None


def _error(source: SourceMap, loc: tuple[str | int, ...], message: str) -> ConfigError:
    return ConfigError(source.path, [(source.line_of(loc), f"{format_loc(loc)}: {message}")])


def _check_sluice(spec: MatrixSpec, fleets: dict[str, Fleet], source: SourceMap) -> None:
    fleet = next(iter(fleets.values()))
    urls = {b.name: f"http://{b.name}.virtual" for b in fleet.backends}
    try:
        SluiceConfig.model_validate(sluice_config(fleet, urls, spec.sluice))
    except ValidationError as exc:
        raise config_error_from_validation(exc, source, ("sluice",)) from None


@dataclass(frozen=True, slots=True)
class Selection:
    """A subset and overrides of a matrix (``sluice bench`` flags); ``None`` keeps the file's value."""

    policies: Sequence[str] | None = None
    workloads: Sequence[str] | None = None
    fleets: Sequence[str] | None = None
    seeds: Sequence[int] | None = None
    load_levels: Sequence[float] | None = None
    duration_s: float | None = None
    warmup_s: float | None = None


def _kept(entries: Sequence[Any], names: Sequence[str] | None, what: str, path: str) -> list[tuple[int, Any]]:
    """``(index in the file, entry)`` of the entries selected by name (all when ``names`` is None)."""

    def key(entry: Any) -> str:
        return str(entry.key if what == "policies" else entry.name)

    if names is not None:
        unknown = sorted(set(names) - {key(e) for e in entries})
        if unknown:
            raise ConfigError(path, [(None, f"--{what}: not in the matrix: {', '.join(unknown)}")])
    return [(i, e) for i, e in enumerate(entries) if names is None or key(e) in names]


def _select(spec: MatrixSpec, selection: Selection, path: str) -> MatrixSpec:
    update: dict[str, Any] = {
        "policies": [e for _, e in _kept(spec.policies, selection.policies, "policies", path)],
        "workloads": [e for _, e in _kept(spec.workloads, selection.workloads, "workloads", path)],
        "fleets": [e for _, e in _kept(spec.fleets, selection.fleets, "fleets", path)],
    }
    for name in ("seeds", "load_levels", "duration_s", "warmup_s"):
        value = getattr(selection, name)
        if value is not None:
            update[name] = value
    if selection.policies is not None and spec.reference not in selection.policies:
        update["reference"] = update["policies"][0].key
    try:
        return MatrixSpec.model_validate({**dict(spec), **update})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'matrix'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(path, [(None, f"after the command-line selection: {problems}")]) from None


def load_matrix(path: str | Path, selection: Selection | None = None) -> Matrix:
    """Load and validate a matrix file; ``selection`` keeps a subset (only it is built and checked)."""
    data, source = load_yaml(path)
    full = validate(MatrixSpec, data, source)
    spec = _select(full, selection or Selection(), source.path)
    base_dir = Path(path).resolve().parent
    fleets: dict[str, Fleet] = {}
    for i, fleet_entry in _kept(full.fleets, [f.name for f in spec.fleets], "fleets", source.path):
        fleet_path = base_dir / fleet_entry.file
        if not fleet_path.is_file():
            raise _error(source, ("fleets", i, "file"), f"no fleet file {str(fleet_path)!r}")
        fleets[fleet_entry.name] = load_fleet(fleet_path)  # a broken fleet file names its own file and line
    _check_sluice(spec, fleets, source)
    for i, policy in _kept(full.policies, [p.key for p in spec.policies], "policies", source.path):
        check_policy(policy.name, policy.params, source, ("policies", i))
    workloads: dict[str, Workload] = {}
    for i, entry in _kept(full.workloads, [w.name for w in spec.workloads], "workloads", source.path):
        try:
            workloads[entry.name] = build_workload(entry.workload, entry.options, entry.params)
        except WorkloadError as exc:
            raise _error(source, ("workloads", i), str(exc)) from None
    return Matrix(spec, str(path), fleets, workloads)
