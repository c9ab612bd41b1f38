"""The error table and the package layering rules."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from core import errors


def test_every_error_renders_openai_body_and_header() -> None:
    for cls, spec in errors.ERROR_TABLE.items():
        if issubclass(cls, errors.Rejected):
            err: errors.SluiceError = cls("busy", retry_after_s=2.2, reason="overload")
        else:
            err = cls("bad thing", param="model")
        body = orjson.loads(err.body())
        assert set(body["error"]) == {"message", "type", "code", "param"}
        assert body["error"]["code"] == spec.code
        assert err.status == spec.status
        assert err.headers()[errors.ERROR_CODE_HEADER] == spec.code


def test_rejections_carry_whole_second_retry_after() -> None:
    err = errors.Shed("busy", retry_after_s=2.2, reason="slo_infeasible")
    assert err.headers()["Retry-After"] == "3"
    assert errors.Shed("busy", retry_after_s=0.0, reason="x").headers()["Retry-After"] == "1"
    assert err.headers()["x-sluice-shed-reason"] == "slo_infeasible"


@pytest.mark.parametrize("package", ["core", "policies", "predictors"])
def test_pure_packages_never_import_network_libraries(package: str) -> None:
    code = (
        f"import sys, importlib, pkgutil; import {package} as p\n"
        "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "banned = {'aiohttp', 'redis', 'router', 'loadgen'}\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in banned)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
