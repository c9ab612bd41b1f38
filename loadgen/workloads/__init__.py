"""Workloads: real traces and synthetic generators, all yielding ``loadgen.workload.WorkloadRequest``.

``build_workload(name, options, params)`` validates everything up front
(unknown workload, option or parameter → ``WorkloadError``) and
``Workload.requests()`` returns a fresh, lazily generated, arrival-sorted
iterator; it reads the trace before returning, so a missing or corrupt file
fails before a run starts. One module per source:

=====================  =======================================================
``azure_code/_conv``   Azure LLM trace 2023 (``azure``)
``mooncake_*``         Mooncake traces with real prefix sharing (``mooncake``)
``sharegpt``           ShareGPT multi-turn sessions (``sharegpt``)
``servegen``           ServeGen per-client windows, multi-tenant (``servegen``)
``arxiv``              arXiv summarisation lengths (``arxiv``)
``poisson`` …          synthetic generators (``synthetic``)
=====================  =======================================================
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from loadgen.workload import WorkloadRequest
from loadgen.workloads import arxiv, azure, mooncake, servegen, sharegpt, synthetic
from loadgen.workloads.base import (
    SourceContext,
    WorkloadOptions,
    WorkloadParams,
    WorkloadSpec,
    parse_options,
    parse_params,
    registered,
)
from loadgen.workloads.errors import WorkloadError
from loadgen.workloads.pipeline import finish

__all__ = [
    "Workload",
    "WorkloadError",
    "WorkloadOptions",
    "build_workload",
    "registered",
]
_SOURCES = (arxiv, azure, mooncake, servegen, sharegpt, synthetic)


@dataclass(frozen=True, slots=True)
class Workload:
    spec: WorkloadSpec
    options: WorkloadOptions
    params: WorkloadParams

    @property
    def name(self) -> str:
        return self.spec.name

    def requests(self) -> Iterator[WorkloadRequest]:
        """A fresh iterator of the workload's requests; the first one is produced before returning."""
        drafts = self.spec.generate(self.params, SourceContext(self.options, self.spec.name))
        stream = finish(drafts, self.options, self.spec.name)
        first = next(stream, None)
        if first is None:
            return iter(())
        return itertools.chain((first,), stream)

    def describe(self) -> dict[str, Any]:
        """Name, options and parameters as plain JSON values (for results files)."""
        return {
            "name": self.name,
            "options": self.options.model_dump(mode="json"),
            "params": self.params.model_dump(mode="json"),
        }


def build_workload(
    name: str,
    options: WorkloadOptions | Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Workload:
    spec = registered().get(name)
    if spec is None:
        raise WorkloadError(f"unknown workload {name!r}; known: {', '.join(registered())}")
    opts = options if isinstance(options, WorkloadOptions) else parse_options(options or {})
    if spec.chat_only and opts.endpoint != "chat":
        raise WorkloadError(f"workload {name!r} is multi-turn chat; it cannot use --endpoint {opts.endpoint}")
    return Workload(spec, opts, parse_params(spec, params or {}))
