"""Whether the hot modules run compiled (mypyc) or as pure Python, and the guard against a stale build.

Why: ``make install`` compiles the modules on the per-request path with mypyc
(``sluice/native_build.py``), leaving an extension module (``*.so``) next to
each ``.py``. Python's importer prefers the extension, so a ``.so`` built from
an older source would silently shadow every later edit of the ``.py``: the
classic trap of in-place builds. This module is imported first by every
package that holds compiled modules (``core``, ``decision``, ``policies``,
``predictors``, ``state``) and decides once per process:

* the build stamp (``native_build.json`` at the repository root, written by
  the build after the extensions) records the SHA-256 of every ``.py`` in those
  packages at build time: compiled code was type-specialised against all of
  them, not only against its own source. If any file changed, was added or
  removed, if an extension has no stamp entry or a stamped one is missing, the
  build is stale: every compiled module is then imported from its ``.py``
  instead (never a mix of the two), and one warning names the changed files
  and the fix, ``make native``;
* ``SLUICE_PURE_PYTHON=1`` does the same on purpose (opt-out; A/B runs);
* ``SLUICE_REQUIRE_NATIVE=1`` turns "not running compiled" into an
  ``ImportError`` (CI sets it so that a failed build cannot pass as a green
  compiled run).

Nothing here may import a module that could be compiled: it runs before them.
Checking costs a few milliseconds at start-up (hashing ~0.5 MB of source),
nothing per request.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

STAMP_NAME = "native_build.json"
# The packages whose sources a build depends on: every compiled module lives in one, and mypyc type-checks
# compiled code against the rest of them (attribute types of core.types, for instance).
INPUT_PACKAGES = ("core", "decision", "policies", "predictors", "state")
PURE_ENV = "SLUICE_PURE_PYTHON"
REQUIRE_ENV = "SLUICE_REQUIRE_NATIVE"
FIX = "run `make native` (or `python -m sluice.native_build`) to rebuild, or set SLUICE_PURE_PYTHON=1"
ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("sluice.native")


@dataclass(frozen=True, slots=True)
class NativeStatus:
    """What this process runs: ``compiled`` module names (empty = pure Python) and why, in one line."""

    compiled: tuple[str, ...]
    reason: str
    stale: bool = False

    @property
    def active(self) -> bool:
        return bool(self.compiled)

    def describe(self) -> str:
        if self.compiled:
            return f"compiled with mypyc ({len(self.compiled)} modules; {self.reason})"
        return f"pure Python ({self.reason})"


def source_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, hex: the build stamp's unit of comparison."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_sources(root: Path) -> list[Path]:
    """Every ``.py`` the compiled build depends on, relative to ``root``, sorted."""
    found: list[Path] = []
    for package in INPUT_PACKAGES:
        base = root / package
        if base.is_dir():
            found.extend(p.relative_to(root) for p in base.rglob("*.py"))
    return sorted(found)


def input_digests(root: Path) -> dict[str, str]:
    """``{"core/types.py": sha256, ...}`` for every input source."""
    return {path.as_posix(): source_digest(root / path) for path in input_sources(root)}


def extension_modules(root: Path, suffixes: Sequence[str] | None = None) -> dict[str, Path]:
    """Module name -> extension file for every extension this interpreter could import from the packages."""
    suffixes = tuple(suffixes if suffixes is not None else importlib.machinery.EXTENSION_SUFFIXES)
    found: dict[str, Path] = {}
    for package in INPUT_PACKAGES:
        base = root / package
        if not base.is_dir():
            continue
        for path in base.rglob("*.so"):
            name = path.name
            for suffix in suffixes:
                if name.endswith(suffix):
                    relative = path.relative_to(root).with_name(name[: -len(suffix)])
                    found[".".join(relative.parts)] = path
                    break
    return found


def check(root: Path, environ: Mapping[str, str]) -> tuple[NativeStatus, frozenset[str]]:
    """The status of the build under ``root`` and the module names that must be imported from source.

    Reads files only; never imports an extension.
    """
    extensions = extension_modules(root)
    everything = frozenset(extensions)
    if environ.get(PURE_ENV, "") not in ("", "0"):
        return NativeStatus((), f"{PURE_ENV}={environ[PURE_ENV]}"), everything
    if not extensions:
        return NativeStatus((), "no compiled build; `make native` builds one"), everything
    stamp_path = root / STAMP_NAME
    try:
        stamp = json.loads(stamp_path.read_text())
        stamped_modules: dict[str, str] = stamp["modules"]
        stamped_inputs: dict[str, str] = stamp["inputs"]
        shared_lib = root / stamp["shared_lib"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return NativeStatus((), f"stale compiled build: no valid {STAMP_NAME} ({exc})", True), everything
    problems: list[str] = []
    current = input_digests(root)
    changed = sorted(p for p in current.keys() & stamped_inputs.keys() if current[p] != stamped_inputs[p])
    added = sorted(current.keys() - stamped_inputs.keys())
    removed = sorted(stamped_inputs.keys() - current.keys())
    if changed:
        problems.append("changed since the build: " + ", ".join(changed))
    if added:
        problems.append("added since the build: " + ", ".join(added))
    if removed:
        problems.append("removed since the build: " + ", ".join(removed))
    orphans = sorted(extensions.keys() - stamped_modules.keys())
    if orphans:
        problems.append("extensions without a stamp entry: " + ", ".join(orphans))
    missing = sorted(stamped_modules.keys() - extensions.keys())
    if missing:
        problems.append("stamped extensions missing: " + ", ".join(missing))
    if not shared_lib.is_file():
        problems.append(f"shared library {shared_lib.name} missing")
    if problems:
        return NativeStatus((), "stale compiled build: " + "; ".join(problems), True), everything
    built = stamp.get("built_at", "?")
    return NativeStatus(tuple(sorted(stamped_modules)), f"built {built}"), frozenset()


class _SourceOnly(importlib.abc.MetaPathFinder):
    """Imports the named modules from their ``.py`` beside the extension, ahead of the default finders."""

    def __init__(self, root: Path, names: frozenset[str]) -> None:
        self._root = root
        self._names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self._names:
            return None
        source = self._root.joinpath(*fullname.split(".")).with_suffix(".py")
        return importlib.util.spec_from_file_location(fullname, source)


def _activate() -> NativeStatus:
    status, blocked = check(ROOT, os.environ)
    if blocked:
        sys.meta_path.insert(0, _SourceOnly(ROOT, blocked))
    if status.stale:
        log.warning("Sluice runs pure Python: %s; %s", status.reason, FIX)
    if not status.active and os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        raise ImportError(f"{REQUIRE_ENV} is set but Sluice runs {status.describe()}; {FIX}")
    return status


STATUS = _activate()
