"""The compiled (mypyc) build is used only when it matches the sources exactly (core/native.py).

A stale extension would silently shadow an edited ``.py``; these tests edit,
add and remove sources, orphan extensions and drop the stamp, and check that
each case falls back to pure Python as a whole, with a reason naming the
cause. The last tests run against the real build when there is one.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.machinery import EXTENSION_SUFFIXES, PathFinder
from pathlib import Path

import pytest

import core.native as native
from core.native import NativeStatus, check, input_digests
from sluice import native_build

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = EXTENSION_SUFFIXES[0]


def _tree(root: Path) -> Path:
    """A fake build: two input packages, one 'compiled' module, its stamp and shared library."""
    (root / "core").mkdir()
    (root / "core" / "__init__.py").write_text("")
    (root / "core" / "types.py").write_text("X = 1\n")
    (root / "predictors").mkdir()
    (root / "predictors" / "__init__.py").write_text("")
    (root / "predictors" / "latency.py").write_text("def f() -> int:\n    return 1\n")
    (root / "predictors" / f"latency{SUFFIX}").write_bytes(b"not an ELF file")
    (root / f"sluice_native__mypyc{SUFFIX}").write_bytes(b"")
    stamp = {
        "modules": {"predictors.latency": "predictors/latency.py"},
        "inputs": input_digests(root),
        "shared_lib": f"sluice_native__mypyc{SUFFIX}",
        "built_at": "2026-01-01T00:00:00Z",
    }
    (root / native.STAMP_NAME).write_text(json.dumps(stamp))
    return root


def test_a_fresh_build_is_used(tmp_path: Path) -> None:
    status, blocked = check(_tree(tmp_path), {})
    assert status == NativeStatus(("predictors.latency",), "built 2026-01-01T00:00:00Z")
    assert status.active
    assert blocked == frozenset()


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda r: (r / "predictors" / "latency.py").write_text("X = 3\n"), "build: predictors/latency.py"),
        (lambda r: (r / "core" / "types.py").write_text("X = 2\n"), "changed since the build: core/types.py"),
        (lambda r: (r / "core" / "new.py").write_text(""), "added since the build: core/new.py"),
        (lambda r: (r / "core" / "types.py").unlink(), "removed since the build: core/types.py"),
        (lambda r: (r / "core" / f"types{SUFFIX}").write_bytes(b""), "without a stamp entry: core.types"),
        (lambda r: (r / "predictors" / f"latency{SUFFIX}").unlink(), None),
        (lambda r: (r / f"sluice_native__mypyc{SUFFIX}").unlink(), "shared library"),
        (lambda r: (r / native.STAMP_NAME).unlink(), "no valid native_build.json"),
        (lambda r: (r / native.STAMP_NAME).write_text("{"), "no valid native_build.json"),
    ],
    ids=[
        "compiled-source-edited",
        "dependency-edited",
        "source-added",
        "source-removed",
        "orphan-extension",
        "extension-removed",
        "shared-library-removed",
        "stamp-removed",
        "stamp-corrupt",
    ],
)
def test_any_difference_from_the_build_means_pure_python_for_every_module(tmp_path, edit, reason) -> None:
    root = _tree(tmp_path)
    extensions_before = set(native.extension_modules(root))
    edit(root)
    status, blocked = check(root, {})
    if reason is None:  # the only extension is gone: nothing left to shadow a source
        assert not status.active
        assert blocked == frozenset()
        return
    assert not status.active
    assert status.stale
    assert reason in status.reason
    assert blocked >= extensions_before  # every extension, not only the edited module's
    assert "pure Python (stale compiled build" in status.describe()


def test_opt_out_and_no_build(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    status, blocked = check(root, {"SLUICE_PURE_PYTHON": "1"})
    assert (status.active, status.stale, blocked) == (False, False, frozenset({"predictors.latency"}))
    assert check(root, {"SLUICE_PURE_PYTHON": "0"})[0].active
    (root / "predictors" / f"latency{SUFFIX}").unlink()
    status, blocked = check(root, {})
    assert (status.active, status.stale, blocked) == (False, False, frozenset())
    assert "make native" in status.reason


def _run(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    environ.update(env, PYTHONPATH=str(cwd))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_stale_extension_never_shadows_its_source(tmp_path: Path) -> None:
    """The guard itself, without a compiler: a garbage ``.so`` beside an edited ``.py`` is skipped."""
    root = tmp_path
    shutil.copytree(ROOT / "core", root / "core", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    package = root / "predictors"
    package.mkdir()
    (package / "__init__.py").write_text("import core.native  # noqa: F401\n")
    (package / "latency.py").write_text("ANSWER = 1\n")
    (package / f"latency{SUFFIX}").write_bytes(b"not an ELF file")
    (root / f"sluice_native__mypyc{SUFFIX}").write_bytes(b"")
    stamp = {
        "modules": {"predictors.latency": "predictors/latency.py"},
        "inputs": input_digests(root),
        "shared_lib": f"sluice_native__mypyc{SUFFIX}",
    }
    (root / native.STAMP_NAME).write_text(json.dumps(stamp))
    (package / "latency.py").write_text("ANSWER = 2\n")  # edited after the "build"
    code = "import predictors.latency as m, core.native as n; print(m.ANSWER, m.__file__, n.STATUS.active)"
    done = _run(code, root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", str(package / "latency.py"), "False"]
    assert "changed since the build: predictors/latency.py" in done.stderr
    assert "make native" in done.stderr
    required = _run(code, root, SLUICE_REQUIRE_NATIVE="1")
    assert required.returncode != 0
    assert "SLUICE_REQUIRE_NATIVE is set" in required.stderr
    # Without the guard the importer would have picked the extension (and failed on it): the trap is real.
    unguarded = PathFinder.find_spec("predictors.latency", [str(package)])
    assert unguarded is not None
    assert unguarded.origin == str(package / f"latency{SUFFIX}")


def test_importing_the_build_module_leaves_the_environment_alone() -> None:
    """Only ``python -m sluice.native_build`` sets SLUICE_PURE_PYTHON, for itself: never for tests."""
    before = dict(os.environ)
    importlib.reload(native_build)
    assert dict(os.environ) == before


def test_the_build_command_runs_under_require_native() -> None:
    """``make native`` must be able to repair a stale build even where CI sets SLUICE_REQUIRE_NATIVE=1."""
    done = subprocess.run(
        [sys.executable, "-m", "sluice.native_build", "--check"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SLUICE_REQUIRE_NATIVE": "1", "SLUICE_PURE_PYTHON": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr  # up to date or not, but no ImportError
    assert "native build: " in done.stdout
    assert "Sluice runs pure Python" not in done.stderr


def test_a_failed_build_leaves_no_extension_and_says_pure_python(tmp_path: Path) -> None:
    """No sources to compile (an empty root): the build fails, reports it and removes what it made."""
    compiled, message = native_build.build(tmp_path)
    assert not compiled
    assert "pure Python" in message
    assert not list(tmp_path.rglob("*.so"))
    assert not (tmp_path / native.STAMP_NAME).exists()


needs_build = pytest.mark.skipif(not native.STATUS.active, reason=f"runs {native.STATUS.describe()}")


@needs_build
def test_this_process_runs_the_compiled_modules() -> None:
    import decision.engine
    import predictors.latency

    assert set(native.STATUS.compiled) == {native_build._module_name(m) for m in native_build.MODULES}
    for module in (predictors.latency, decision.engine):
        assert module.__file__ is not None
        assert module.__file__.endswith(SUFFIX)
    assert native_build._up_to_date(ROOT, input_digests(ROOT))


@needs_build
def test_editing_a_source_of_the_real_build_switches_to_pure_python(tmp_path: Path) -> None:
    for package in native.INPUT_PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    stamp = json.loads((ROOT / native.STAMP_NAME).read_text())
    shutil.copy2(ROOT / stamp["shared_lib"], tmp_path / stamp["shared_lib"])
    shutil.copy2(ROOT / native.STAMP_NAME, tmp_path / native.STAMP_NAME)
    code = """
        import predictors.latency as m, decision.engine as e, core.native as n
        print(m.__file__, e.__file__, n.STATUS.active)
    """
    fresh = _run(code, tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split()[2] == "True"
    assert fresh.stdout.split()[0].endswith(SUFFIX)
    with open(tmp_path / "predictors" / "online.py", "a") as source:
        source.write("# edited after the build\n")
    stale = _run(code, tmp_path)
    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.split() == [
        str(tmp_path / "predictors" / "latency.py"),
        str(tmp_path / "decision" / "engine.py"),
        "False",
    ]
    assert "changed since the build: predictors/online.py" in stale.stderr
