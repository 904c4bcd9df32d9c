# genqueue: `make demo` runs the 60-user burst on the embedded default; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo up test lint unit bench clean client

# genqueue's wheel carries the Python client (clients/python/src), which its tools use.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "genqueue needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/genqueue demo --users 60

up: $(STAMP)
	$(BIN)/genqueue up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

# ruff and mypy run beside the tests that run two at a time; the tests marked serial (they
# time things) run alone after them.
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || echo "no Chromium found: the browser tests (tests/e2e/test_pages.py) will be skipped"
	@$(MAKE) --no-print-directory lint > $(VENV)/lint.log 2>&1 & lint=$$!; \
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not serial" --durations=15; tests=$$?; \
	wait $$lint; linted=$$?; cat $(VENV)/lint.log; \
	[ $$tests -eq 0 ] && [ $$linted -eq 0 ]
	$(BIN)/python -m pytest -q -m serial --durations=10

# The TypeScript client (clients/typescript): compiled into its dist/, a link to the folder the
# user page imports it from (serve_app/static/genqueue-client), which is committed;
# tests/e2e/test_clients.py checks it is current.
client:
	cd clients/typescript && npm ci --no-audit --no-fund && npm run build

bench: $(STAMP)
	$(BIN)/python bench/suite.py --out bench/results.md

clean:
	rm -rf $(VENV) .genqueue genqueue-demo-output .mypy_cache .ruff_cache .pytest_cache .hypothesis
