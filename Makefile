# Two entry points for a fresh machine: `make demo` and `make test`.
# Each installs what it needs: Debian packages (graphviz), a .venv, the Python packages.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Plugins that live in this repository as separate distributions.
LOCAL_PLUGINS := $(wildcard examples/plugins/*/pyproject.toml)

.PHONY: demo test lint typecheck unit editor sysdeps bench fuzz clean

# Runs examples/quickstart.flow on the embedded broker until Ctrl-C (or for DEMO_FOR,
# e.g. `make demo DEMO_FOR=60s`). Watch it from another terminal with
# `.venv/bin/tideflow status` and `.venv/bin/tideflow runs`.
demo: $(STAMP)
	$(VENV)/bin/tideflow lint examples/quickstart.flow
	$(VENV)/bin/tideflow graph examples/quickstart.flow -o out/quickstart.svg
	@echo "drew out/quickstart.svg; running the flow (Ctrl-C to stop)"
	$(VENV)/bin/tideflow run examples/quickstart.flow $(if $(DEMO_FOR),--duration $(DEMO_FOR))

test: $(STAMP) lint typecheck unit editor

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy cannot follow setuptools' editable finder, so it reads the package through
# a tree of links laid out as installed (tideflow/dsl -> ../dsl, ...).
typecheck: $(STAMP)
	@rm -rf .typecheck && mkdir -p .typecheck/tideflow
	@for f in tideflow/*; do ln -s "$$PWD/$$f" .typecheck/tideflow/; done
	@for d in dsl compiler runtime plugins grammars; do ln -s "$$PWD/$$d" .typecheck/tideflow/$$d; done
	$(VENV)/bin/mypy -p tideflow

unit: $(STAMP)
	$(VENV)/bin/pytest -W error --durations=20

# The VS Code extension (editors/vscode): its client compiles, and its grammar
# tokenizes the fixtures and every example flow as committed. Needs npm (and
# nothing of the .venv); `npm ci` runs only when package-lock.json is newer than
# the last install. Without npm, one line says that the tests were skipped.
EDITOR_DIR := editors/vscode
editor:
	@if command -v npm >/dev/null 2>&1; then \
	  set -e; cd $(EDITOR_DIR); \
	  if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then \
	    npm ci --no-audit --no-fund; \
	  fi; \
	  npm test; \
	else \
	  echo "SKIPPED the VS Code extension's grammar tests ($(EDITOR_DIR)): npm is not installed"; \
	fi

# Each prints its figures beside a baseline measured in the same run.
bench: $(STAMP)
	$(PY) bench/compile_bench.py
	$(PY) bench/runtime_bench.py
	$(PY) bench/broker_bench.py
	$(PY) bench/autoscale_bench.py
	$(PY) bench/hostile_bench.py
	$(PY) bench/memory_bench.py
	$(PY) bench/lsp_bench.py

# Coverage-guided fuzzing of the parser, checks, reports and fmt for FUZZ_FOR seconds
# (default 600); the corpus grows in bench/fuzz/corpus, findings land in out/fuzz/.
FUZZ_FOR ?= 600
fuzz: $(STAMP)
	$(PIP) install -q -e ".[fuzz]"
	mkdir -p out/fuzz
	cd out/fuzz && ../../$(PY) ../../bench/fuzz/fuzz_flow.py -max_total_time=$(FUZZ_FOR) -print_final_stats=1

# Debian packages: graphviz (`dot`, for pictures) and chromium (the dashboard's
# browser tests; never a browser that a tool downloads itself).
sysdeps:
	@missing=""; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian's packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml $(LOCAL_PLUGINS) | sysdeps
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e ".[all,test]"
	for p in $(dir $(LOCAL_PLUGINS)); do $(PIP) install -q -e "$$p" || exit 1; done
	touch $(STAMP)

clean:
	rm -rf $(VENV) .typecheck out .pytest_cache .mypy_cache .ruff_cache
	rm -rf $(EDITOR_DIR)/node_modules $(EDITOR_DIR)/out
