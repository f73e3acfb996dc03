VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint format clean

$(STAMP): pyproject.toml constraints.txt scripts/setup_dev.sh
	bash scripts/setup_dev.sh

setup: $(STAMP)  ## create .venv with pinned CPU torch and every dependency

test: $(STAMP)  ## lint, then the whole test suite (slow end-to-end tests included)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -ra

test-fast: $(STAMP)  ## the suite without the slow end-to-end tests
	$(PY) -m pytest -ra -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
