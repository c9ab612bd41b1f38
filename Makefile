# Sluice developer commands. `make demo` and `make test` are the two set-up commands in README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install native test test-pure lint demo bench clean

install: $(STAMP) native

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The hot modules compiled in place with mypyc (sluice/native_build.py, docs/compiled.md): a no-op when the
# build is up to date; without a C compiler or on a failed build it says so and Sluice runs pure Python.
native: $(STAMP)
	$(PY) -m sluice.native_build

# The whole suite on the compiled build (when there is one), then the decision-critical tests on pure Python.
test: install
	$(PY) -m pytest -q
	$(PURE_ENV) $(PY) -m pytest -q $(PURE_TESTS)

PURE_TESTS := tests/unit/test_decision_replay.py tests/unit/test_engine.py tests/unit/test_admission_control.py \
	tests/unit/test_admission_decide.py tests/unit/test_predictor_facade.py tests/unit/test_latency_model.py \
	tests/unit/test_length_model.py tests/unit/test_online_length.py tests/unit/test_online_features.py \
	tests/unit/test_online_table_exact.py tests/unit/test_token_keys.py \
	tests/unit/test_prefix_index.py tests/unit/test_fleet_state.py tests/unit/test_tokens_features.py \
	tests/unit/test_concurrency_limits.py tests/unit/test_tenant_budgets.py tests/unit/test_cost_columns.py \
	tests/unit/test_pipeline.py tests/unit/test_predictive.py tests/unit/test_native_build.py \
	tests/unit/test_views.py tests/unit/test_fast_init.py

PURE_ENV := SLUICE_PURE_PYTHON=1 SLUICE_REQUIRE_NATIVE=0

test-pure: install
	$(PURE_ENV) $(PY) -m pytest -q $(PURE_TESTS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: install
	$(PY) -m sluice demo

bench: install
	$(PY) bench/run_all.py $(ARGS)

clean:
	-test -x $(PY) && $(PY) -m sluice.native_build --clean
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build/native
