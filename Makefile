# The two commands a fresh machine needs: `make run` and `make test`.
# Each creates (or reuses) the virtual environment and installs what it needs first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint bench clean

# torch is pinned here, not in pyproject.toml: 2.13.0 is the CPU build on this disk,
# while the package metadata allows newer (CUDA) releases for GPU users.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The whole ecosystem on one machine: entry workers + the evolver, on the data directory of
# M2N2_DATA_DIR (else the per-user one) and the port of BENTOML_PORT (else 3000).
run: $(INSTALLED)
	$(BIN)/bentoml serve service.app:Ecosystem

# pytest exits 5 when it collects no test; that is not a failure of the code.
# Unless M2N2_TEST_POSTGRES_URL names a database, the store tests also run on a throwaway PostgreSQL
# (scripts/postgres.sh), stopped afterwards; if it cannot start, those tests skip and the rest still run.
# The browser tests (tests/ui) drive the system's Chromium, installed if missing by scripts/browser.sh;
# without one they skip.
test: $(INSTALLED)
	@pgdir=; \
	if [ -z "$${M2N2_TEST_POSTGRES_URL:-}" ]; then \
		pgdir=$$(mktemp -d -t m2n2-postgres.XXXXXX); \
		trap 'bash scripts/postgres.sh stop "$$pgdir" >/dev/null 2>&1; rm -rf "$$pgdir"' EXIT; \
		trap 'exit 130' INT TERM; \
		if out=$$(bash scripts/postgres.sh start "$$pgdir"); then \
			export M2N2_TEST_POSTGRES_URL="$$(printf '%s\n' "$$out" | tail -n 1)"; \
		else \
			echo "PostgreSQL did not start: the PostgreSQL tests will skip" >&2; \
		fi; \
	fi; \
	if [ -z "$${M2N2_TEST_CHROMIUM:-}" ]; then \
		if out=$$(bash scripts/browser.sh); then \
			export M2N2_TEST_CHROMIUM="$$(printf '%s\n' "$$out" | tail -n 1)"; \
		else \
			echo "Chromium is not available: the browser tests will skip" >&2; \
		fi; \
	fi; \
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(INSTALLED)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.digits --panel scratch --out benchmarks/results
	$(BIN)/python -m benchmarks.digits --panel pretrained --out benchmarks/results

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
