"""Reference docs cannot drift from the code: every config key (with its default) and metric is listed."""

from __future__ import annotations

import random
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from core.clock import ManualClock
from core.config import LoadedConfig, SluiceConfig, load_config_text
from core.yaml_source import SourceMap
from decision.engine import DecisionEngine
from router.metric_types import Counter, GaugeSource, Histogram
from router.metrics import SluiceMetrics
from state.fleet import FleetState

DOCS = Path(__file__).resolve().parents[2] / "docs"
_ROW = re.compile(r"^\| `([^`]+)` \| `([^`]*)` \|", re.M)


def fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    if isinstance(value, BaseModel):
        return "see below"
    return str(value)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def config_keys(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, field in model.model_fields.items():
        path = prefix + name
        nested = _model_in(field.annotation)
        is_list = typing.get_origin(field.annotation) is tuple
        if nested is not None and is_list:
            out.update(config_keys(nested, path + "[]."))
            continue
        if nested is not None:
            out.update(config_keys(nested, path + "."))
            continue
        if field.is_required():
            out[path] = "required"
        elif field.default is not PydanticUndefined:
            out[path] = fmt(field.default)
        else:
            out[path] = fmt(field.default_factory())  # type: ignore[call-arg,misc]
    return out


def test_configuration_doc_lists_every_key_with_its_default() -> None:
    documented = dict(_ROW.findall((DOCS / "configuration.md").read_text()))
    expected = config_keys(SluiceConfig)
    assert set(documented) == set(expected), (
        f"undocumented: {sorted(set(expected) - set(documented))}; "
        f"no longer in the schema: {sorted(set(documented) - set(expected))}"
    )
    wrong = {k: (documented[k], v) for k, v in expected.items() if documented[k] != v}
    assert not wrong, f"defaults differ (doc, code): {wrong}"


def test_metrics_doc_lists_every_metric() -> None:
    config = load_config_text("backends:\n  - {name: a, url: 'http://127.0.0.1:1', models: [m]}\n").config
    clock = ManualClock()
    engine = DecisionEngine.from_config(LoadedConfig(config, SourceMap("<test>")), clock, random.Random(0))
    metrics = SluiceMetrics(FleetState(config, clock), engine)
    names = {m.name for m in vars(metrics).values() if isinstance(m, Counter | Histogram)} | {
        g.name for g in [*metrics._fleet_gauges(), *metrics._admission_gauges(), *metrics._refit_metrics()]
    }
    text = (DOCS / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(sluice_[a-z0-9_]+)` \|", text, re.M))
    assert documented == names
    kinds = dict(re.findall(r"^\| `(sluice_[a-z0-9_]+)` \| (\w+) \|", text, re.M))
    for metric in [
        *metrics._fleet_gauges(),
        *metrics._refit_metrics(),
    ]:  # read at scrape time: a gauge, or a counter kept elsewhere
        assert kinds[metric.name] == ("gauge" if isinstance(metric, GaugeSource) else "counter"), metric.name
