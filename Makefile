VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast test-upstream lint format demo docs recipes bench bench-quick gpu-check gpu-check-dry quality clean

$(STAMP): pyproject.toml constraints.txt scripts/setup_dev.sh
	bash scripts/setup_dev.sh

setup: $(STAMP)  ## create .venv with pinned CPU torch and every dependency

test: $(STAMP)  ## lint, format and type checks, then the whole test suite (slow end-to-end tests included)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -ra

test-fast: $(STAMP)  ## the suite without the slow end-to-end tests
	$(PY) -m pytest -ra -m "not slow"

test-upstream: $(STAMP)  ## LLaMA-Factory 0.9.5's own tests with and without the hook (LLAMAFACTORY_SOURCE=<clone or sdist>; ~8 min)
	$(PY) scripts/upstream_tests.py --work upstream_tests

demo: $(STAMP)  ## build a tiny offline LLaMA + the bundled dataset, train it with LoSiA-Pro on CPU
	$(VENV)/bin/losia-factory demo-assets --out demo
	HF_HUB_OFFLINE=1 PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/llamafactory-cli train recipes/quickstart_cpu.yaml
	@echo "Demo done: the trained model (a full model) is in $(CURDIR)/saves/quickstart-losia"
	@echo "Try it:    $(VENV)/bin/llamafactory-cli chat recipes/quickstart_chat.yaml"

bench-quick: $(STAMP)  ## smoke run of the training-cost benchmark (small model, seconds)
	$(VENV)/bin/losia-factory benchmark --quick

bench: $(STAMP)  ## the full CPU benchmark of docs/benchmarks.md, all methods, interleaved timing (~45 min on 2 cores)
	$(VENV)/bin/losia-factory benchmark --json docs/bench/cpu.json --plot docs/images/benchmark_cpu.png \
		--activation-sweep 1/16,1/8,1/4,1/2

gpu-check:  ## GPU evidence on one CUDA GPU (~6 min; python3 with torch there) -> gpu_check_out/summary.md
	bash scripts/gpu_check.sh --out $(or $(OUT),gpu_check_out)

gpu-check-dry: $(STAMP)  ## every section of gpu-check on the CPU with tiny sizes (what CI runs; ~6 min)
	PYTHON=$(PY) bash scripts/gpu_check.sh --dry-run --out gpu_check_dry

quality: $(STAMP)  ## LoSiA vs LoRA vs full fine-tuning on SmolLM2-135M (CPU, offline; hours; resumable) -> docs/quality.md
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) scripts/quality.py $(QUALITY_ARGS)

docs: $(STAMP)  ## regenerate docs/arguments.md from the argument dataclass and docs/errors.md from the bad-input table
	$(PY) scripts/gen_arguments_doc.py
	$(PY) scripts/gen_errors_doc.py

recipes: $(STAMP)  ## regenerate recipes/paper/ from the settings table in losia_factory/reproduce/settings.py
	$(PY) scripts/gen_paper_recipes.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
