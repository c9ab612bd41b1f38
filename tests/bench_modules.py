"""Load a script of ``bench/`` as a module, for tests of the benchmarks' own logic.

``bench/`` is a directory of scripts, not an installed package, so tests load a script from its
file. ``module_name`` is the name it is registered under in ``sys.modules``: scripts that import
their siblings by plain name (``run_all``, ``_peers_table``) need the plain name, the others are
kept under ``bench.<name>`` so they cannot shadow a real top-level module.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench_module(name: str, module_name: str | None = None) -> ModuleType:
    registered = module_name or f"bench.{name}"
    spec = importlib.util.spec_from_file_location(registered, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[registered] = module
    spec.loader.exec_module(module)
    return module
