# One task runner, the same commands locally and in CI.
# `make demo` and `make test` set everything up from a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# `make ui` after `make demo`: the dashboard over the demo's store on http://127.0.0.1:8765/.
.PHONY: ui demo test test-fast test-phoenix test-browser browser ui-shots lint typecheck bench bench-pg bench-int eval clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tether needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Dependencies are pinned by constraints.txt so every machine and CI install the same versions.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/tether demo

$(VENV)/.installed-ui: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[ui]'
	touch $@ $(VENV)/.installed

ui: $(VENV)/.installed-ui
	$(BIN)/tether --store tether-demo/tether.db ui serve

# Ruff, then the import contract (pyproject.toml, [tool.importlinter]; docs/design.md, Layering).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/lint-imports --no-logo

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test: lint typecheck browser
	$(BIN)/pytest -n 2 --dist loadfile

# The inner loop: everything but the SIGKILL crash and soak suites, the property test
# that starts worker subprocesses and the browser tests (`make test` is the CI gate).
test-fast: $(VENV)/.installed-dev
	$(BIN)/pytest -n 2 --dist loadfile -m "not crash and not workers and not browser" -q --durations=10

# The system's Chromium for the browser tests (Playwright cannot download its own here):
# installed with apt-get when missing and run as root; otherwise the script says why and
# the browser tests skip (under CI, CI=true as .ci/run runs, they fail instead).
browser:
	@bash scripts/ensure-chromium.sh

# The dashboard in headless Chromium alone (tests/test_ui_browser.py).
test-browser: $(VENV)/.installed-dev browser
	$(BIN)/pytest -n 0 -m browser tests/test_ui_browser.py --durations=10

# docs/img/ui-*.png, the screenshots docs/ui.md shows: the demo's night served by
# `tether ui serve`, each page at a fixed viewport (scripts/ui_shots.py).
ui-shots: $(VENV)/.installed-dev browser
	$(BIN)/python scripts/ui_shots.py --out docs/img

# Arize Phoenix as a real OTLP receiver (tests/test_phoenix.py), in a venv of its own: it is
# large (about 860 MB, a minute to install here) and its pins must not touch tether's.
PHOENIX_VENV := .venv-phoenix
$(PHOENIX_VENV)/.installed:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip install -q 'arize-phoenix>=20,<21'
	touch $@

test-phoenix: $(VENV)/.installed-dev $(PHOENIX_VENV)/.installed
	PHOENIX_BIN=$(abspath $(PHOENIX_VENV))/bin/phoenix $(BIN)/pytest -n 0 -p no:randomly -m phoenix tests/test_phoenix.py

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench --out docs/benchmarks.md

# The PostgreSQL section alone (bench/pg_cost.py), printed: the server at 127.0.0.1:5432
# (database test) or $$TETHER_BENCH_PG; `make bench` runs it and writes it into the report.
bench-pg: $(VENV)/.installed-bench
	$(BIN)/python -m bench.pg_cost

# Framework agents alone and under tether (bench/integrations_cost.py): PydanticAI, the OpenAI
# Agents SDK and LangGraph (also with its own AsyncSqliteSaver), cost per turn; `make bench`
# runs it too. This writes its section alone into docs/benchmarks.md, in place of the last one.
bench-int: $(VENV)/.installed-bench
	$(BIN)/python -m bench.integrations_cost --write docs/benchmarks.md

# The monitors' evaluation: the labelled scenarios (bench/eval/labels.json) and the tau-bench
# transcripts in ../shared/data if present; rewrites docs/monitors.md's Evaluation section.
eval: $(VENV)/.installed-dev
	$(BIN)/python -m bench.eval --out docs/monitors.md

clean:
	rm -rf $(VENV) $(PHOENIX_VENV) tether-demo .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
