"""Compile the per-request hot modules with mypyc, in place; ``make install`` runs it (idempotent).

    python -m sluice.native_build [--force] [--strict] [--check]

Each module in ``MODULES`` becomes an extension (``predictors/latency.cpython-311-x86_64-linux-gnu.so``
beside ``predictors/latency.py``), all sharing one runtime library at the repository root
(``sluice_native__mypyc.*.so``); C sources and objects go to ``build/native/`` (the log of the last
build is ``build/native/build.log``). The stamp ``native_build.json`` is written last, with the
SHA-256 of every source the build depends on; ``core/native.py`` compares it at start-up and imports
every module from source when anything changed (docs/compiled.md).

Why these modules: they are where a request's decision spends its CPU (the predictors' per-dimension
float arithmetic, admission, the prefix index, the decision engine, the fleet snapshot, the routing
pipeline and its plugins). mypyc cannot compile pydantic models, so the plugins' parameter models
live in the uncompiled ``policies/params.py``.

Up to date (same sources, same interpreter): prints so and exits 0 in milliseconds. No C compiler, no
Python headers or a failed build: the old extensions are removed, a warning says Sluice runs pure
Python, and it exits 0 so that the install still succeeds (``--strict``: exit 1 instead).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # Run as the build, which only reads sources: keep core/native.py's guard from warning that the build
    # being replaced is stale, and from refusing to import under SLUICE_REQUIRE_NATIVE while there is no
    # valid build yet. Never when imported (tests do): the variables would reach their subprocesses.
    os.environ["SLUICE_PURE_PYTHON"] = "1"
    os.environ["SLUICE_REQUIRE_NATIVE"] = "0"

from core.native import STAMP_NAME, extension_modules, input_digests

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = Path("build") / "native"
GROUP = "sluice_native"  # the shared runtime library: sluice_native__mypyc.<suffix>

# Compiled, by where the default config's per-request CPU goes (docs/compiled.md has the profile).
MODULES: tuple[str, ...] = (
    # predictors: length features, the length model's prediction, online corrections, the latency model
    # and its per-request cost table
    "predictors/facade.py",
    "predictors/features.py",
    "predictors/output_length.py",
    "predictors/online.py",
    "predictors/online_features.py",
    "predictors/latency.py",
    "predictors/cost_columns.py",
    "core/cost_table.py",
    # request features and token estimation
    "core/features.py",
    "core/tokens.py",
    # the fleet's value types, read per backend by every decision
    "core/views.py",
    # the decision engine, admission, its per-class rule and the state it reads and updates per request
    "decision/engine.py",
    "decision/explain.py",
    "decision/admission_control.py",
    "policies/admission/decide.py",
    "state/concurrency_limits.py",
    "state/service_rate.py",
    "state/tenant_budgets.py",
    # routing context and estimates; fleet state read and written per request; the prefix index
    "policies/context.py",
    "policies/estimate.py",
    "state/fleet.py",
    "state/prefix_index.py",
    # the routing pipeline and its plugins (their pydantic parameter models live in the uncompiled
    # policies/params.py: mypyc cannot compile pydantic models)
    "policies/pipeline.py",
    "policies/sampling.py",
    "policies/filters/imbalance_guard.py",
    "policies/filters/max_concurrency.py",
    "policies/filters/slo_headroom.py",
    "policies/filters/subset.py",
    "policies/pickers/max_score.py",
    "policies/pickers/p2c.py",
    "policies/pickers/random_order.py",
    "policies/pickers/round_robin.py",
    "policies/pickers/softmax.py",
    "policies/scorers/_normalise.py",
    "policies/scorers/consistent_hash.py",
    "policies/scorers/dynamo_cost.py",
    "policies/scorers/kv_cache.py",
    "policies/scorers/least_requests.py",
    "policies/scorers/least_tokens.py",
    "policies/scorers/predicted_cost.py",
    "policies/scorers/prefix_match.py",
    "policies/scorers/prodstack_loadaware.py",
    "policies/scorers/sglang_cache_aware.py",
)


def _ext_suffix() -> str:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return str(suffix) if suffix else ".so"


def _module_name(source: str) -> str:
    return source.removesuffix(".py").replace("/", ".")


def _expected_stamp(inputs: dict[str, str]) -> dict[str, Any]:
    """The stamp's fields that decide whether a build is up to date."""
    return {
        "python": sys.implementation.cache_tag,
        "ext_suffix": _ext_suffix(),
        "modules": {_module_name(m): m for m in MODULES},
        "inputs": inputs,
    }


def _up_to_date(root: Path, inputs: dict[str, str]) -> bool:
    try:
        stamp = json.loads((root / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return False
    expected = _expected_stamp(inputs)
    if any(stamp.get(key) != value for key, value in expected.items()):
        return False
    present = extension_modules(root, [_ext_suffix()])
    return set(present) == set(expected["modules"]) and (root / str(stamp.get("shared_lib", "?"))).is_file()


def _remove_build(root: Path) -> None:
    """Drop the stamp first (so a half-removed build is never taken as valid), then every extension."""
    (root / STAMP_NAME).unlink(missing_ok=True)
    for path in extension_modules(root).values():
        path.unlink()
    for path in root.glob(f"{GROUP}__mypyc*"):
        path.unlink()


def _missing_toolchain() -> str | None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    include = sysconfig.get_paths().get("include", "")
    if not (Path(include) / "Python.h").is_file():
        return f"no Python headers (Python.h in {include})"
    try:
        import mypyc.build  # noqa: F401  (ships with mypy, a dev dependency)
    except ImportError:
        return "mypyc is not installed (pip install mypy)"
    return None


def _compile(root: Path, log_path: Path) -> None:
    """mypycify + build_ext --inplace, with the compiler's chatter in ``log_path``."""
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped]
    from setuptools.command.build_ext import build_ext  # type: ignore[import-untyped]

    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    os.chdir(root)  # mypyc names modules by their path relative to the working directory
    try:
        with open(log_path, "w") as log, redirect_stdout(log), redirect_stderr(log):
            extensions = mypycify(
                list(MODULES),
                opt_level="3",
                debug_level="0",
                group_name=GROUP,
                target_dir=str(BUILD_DIR / "c"),
            )
            if os.name == "posix":
                # Signed overflow wraps (two's complement) instead of being undefined: the prefix hash
                # (core/tokens.py) is arithmetic mod 2^64 on i64. CPython's own CFLAGS have it too.
                for extension in extensions:
                    extension.extra_compile_args = [*extension.extra_compile_args, "-fwrapv"]
            # A bare Distribution: setup() would parse pyproject.toml, which is not a build description here.
            dist = Distribution({"name": "sluice-native", "ext_modules": extensions})
            command = build_ext(dist)
            command.inplace = True
            command.build_temp = str(BUILD_DIR / "temp")
            command.build_lib = str(BUILD_DIR / "lib")
            command.parallel = os.cpu_count() or 1
            command.ensure_finalized()
            command.run()
    finally:
        os.chdir(cwd)


def build(root: Path, *, force: bool = False) -> tuple[bool, str]:
    """Build unless up to date; ``(compiled, message)``. Never leaves a partial build behind."""
    inputs = input_digests(root)
    if not force and _up_to_date(root, inputs):
        return True, f"compiled build up to date ({len(MODULES)} modules)"
    _remove_build(root)
    missing = _missing_toolchain()
    if missing is not None:
        return False, f"{missing}: Sluice will run pure Python"
    log_path = root / BUILD_DIR / "build.log"
    started = time.monotonic()
    try:
        _compile(root, log_path)
    except (Exception, SystemExit) as exc:  # distutils reports compiler errors as SystemExit
        _remove_build(root)
        return False, f"mypyc build failed ({exc!r}; log: {log_path}): Sluice will run pure Python"
    seconds = time.monotonic() - started
    if input_digests(root) != inputs:  # a source was edited while compiling: the result matches neither
        _remove_build(root)
        return False, "sources changed during the build; run it again"
    shared = sorted(root.glob(f"{GROUP}__mypyc*{_ext_suffix()}"))
    if not shared:
        _remove_build(root)
        return False, f"no {GROUP}__mypyc library (log: {log_path}): Sluice will run pure Python"
    stamp = {
        **_expected_stamp(inputs),
        "shared_lib": shared[0].name,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(seconds, 1),
    }
    tmp = root / (STAMP_NAME + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    tmp.replace(root / STAMP_NAME)
    return True, f"compiled {len(MODULES)} modules with mypyc in {seconds:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--strict", action="store_true", help="exit 1 when Sluice would run pure Python")
    parser.add_argument("--check", action="store_true", help="only report whether the build is up to date")
    parser.add_argument("--clean", action="store_true", help="remove the compiled build")
    args = parser.parse_args(argv)
    if args.clean:
        _remove_build(ROOT)
        print("native build: removed; Sluice runs pure Python")
        return 0
    if args.check:
        fresh = _up_to_date(ROOT, input_digests(ROOT))
        print("native build: " + ("up to date" if fresh else "missing or stale"))
        return 0 if fresh else 1
    compiled, message = build(ROOT, force=args.force)
    print(f"native build: {message}", file=sys.stdout if compiled else sys.stderr)
    return 0 if compiled or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
