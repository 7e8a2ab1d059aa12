# s3-model-cache — `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
TOOLS_VENV := .venv-tools
PY := $(VENV)/bin/python
TOOLS := $(TOOLS_VENV)/bin
INSTALLED := $(VENV)/.installed
TOOLS_INSTALLED := $(TOOLS_VENV)/.installed
KSERVE_VENV := .venv-kserve
KSERVE_INSTALLED := $(KSERVE_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(INSTALLED): pyproject.toml loader/pyproject.toml devtools/pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[dev]" -e "./loader[hub]" -e ./devtools
	@touch $@

$(TOOLS_INSTALLED): requirements/tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS)/python -m pip install --quiet --upgrade pip
	$(TOOLS)/python -m pip install --quiet -r requirements/tools.txt
	@touch $@

$(KSERVE_INSTALLED): requirements/kserve.txt
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(KSERVE_VENV)/bin/python -m pip install --quiet -r requirements/kserve.txt
	@touch $@

.PHONY: install
install: $(INSTALLED) $(TOOLS_INSTALLED) $(KSERVE_INSTALLED) ## Create .venv (project, tests, demo, bench), .venv-tools (sam, cfn-lint, checkov), .venv-kserve (KServe's storage initializer)

.PHONY: demo
demo: $(INSTALLED) ## Run the whole story offline: Hub double + local S3 -> cache -> loader -> generate text
	$(PY) -m model_cache_devtools.demo

.PHONY: test
test: install lint validate build ## Lint, validate the template/ASL, sam build, and run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: $(INSTALLED) ## Only the pytest suite, skipping the linters and sam build
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(INSTALLED) ## Only the unit tests (marker `unit`: no servers, no sockets), in seconds
	$(PY) -m pytest -m unit -q $(PYTEST_ARGS)

.PHONY: lint
lint: $(INSTALLED) ## ruff (format check + lint) and mypy
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@# The handlers are all named app.py, so mypy checks them one at a time.
	for handler in functions/*/app.py; do $(VENV)/bin/mypy --strict --follow-imports=silent "$$handler"; done

.PHONY: reliability-figures
reliability-figures: $(INSTALLED) ## Run the fault-injection suite and write its figures into docs/explanation/reliability.md
	MODEL_CACHE_WRITE_FIGURES=1 $(PY) -m pytest tests/reliability tests/operations/test_gc_interleaving.py tests/pipeline/test_request_outcomes.py tests/pipeline/test_fargate_stops.py tests/loader/test_loader_fault_rows.py -p no:randomly $(PYTEST_ARGS)

.PHONY: mutants
mutants: $(INSTALLED) ## Mutation check: break each guard of the promise on a scratch copy; every one must be killed
	$(PY) scripts/mutants.py $(MUTANTS_ARGS)

.PHONY: fmt
fmt: $(INSTALLED) ## Format and auto-fix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: validate
validate: install ## sam validate --lint, cfn-lint (+ serverless rules), checkov, statelint on the ASL
	@if [ -f template.yaml ]; then bash scripts/validate.sh; else echo "no template.yaml yet"; fi

.PHONY: build
build: install ## sam build, offline, for the Lambda runtime and architecture
	@if [ -f template.yaml ]; then PATH="$(CURDIR)/$(TOOLS):$$PATH" $(TOOLS)/sam build --parallel; else echo "no template.yaml yet"; fi

BENCH_INSTALLED := $(VENV)/.bench-installed

$(BENCH_INSTALLED): $(INSTALLED) pyproject.toml requirements/constraints.txt
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[bench]"
	@touch $@

.PHONY: loader-wheel
loader-wheel: $(INSTALLED) ## Build dist/model_cache_loader-<version>-py3-none-any.whl (for publish-loader and the Ray image)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation ./loader -w dist

.PHONY: bench
bench: $(BENCH_INSTALLED) ## Benchmarks (not tests): figures to bench/results/ and docs/explanation/performance.md
	$(PY) -m bench

.PHONY: scale
scale: $(INSTALLED) ## Scale model: the real planner on the largest public models, every figure against its AWS limit
	$(PY) -m bench scale

.PHONY: clean
clean: ## Remove build output and caches (keeps the venvs)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .demo
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: distclean
distclean: clean ## Also remove the venvs
	rm -rf $(VENV) $(TOOLS_VENV)

.PHONY: adopt
adopt: $(INSTALLED) $(KSERVE_INSTALLED) ## Adopt a cached model in Ray Serve LLM, vLLM and KServe by its URI alone, offline (docs/how-to/adopt.md)
	$(PY) -m model_cache_devtools.adopt

.PHONY: playground
playground: $(INSTALLED) ## Start the Hub double and local AWS with the stack deployed, print the env to export, stay up until Ctrl-C
	$(PY) -m model_cache_devtools.demo --playground
