# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo
KERNEL := magnb

.PHONY: demo test test-fast lint format bench clean venv mutants

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "magnb (.venv)" >/dev/null
	touch $(STAMP)

## The main job on the embedded demo data: generate a VASP tree, run the notebooks in order.
demo: $(STAMP)
	$(VENV)/bin/magnb demo --out $(DEMO)

## The whole test suite (slow, slurm and browser tests included).
test: $(STAMP)
	.ci/system-packages
	$(VENV)/bin/ruff check magnb tests bench notebooks tools
	$(VENV)/bin/ruff format --check magnb tests bench notebooks tools
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not slurm and not browser"

lint: $(STAMP)
	$(VENV)/bin/ruff check magnb tests bench notebooks tools

format: $(STAMP)
	$(VENV)/bin/ruff format magnb tests bench notebooks tools
	$(VENV)/bin/ruff check --fix magnb tests bench notebooks tools

## Mutation testing (mutmut 3) of the honesty-critical code: tests/MUTANTS.md. Not part of `make
## test` or CI (about 1.5 h on 2 shared cores, estimated from partial runs: tests/MUTANTS.md).
## The scope is SCOPE in tools/mutants_report.py, the tests it runs [tool.mutmut] in pyproject.toml.
## MUTANTS_GLOBS='magnb.labels.*' re-runs only those mutants and keeps the other results (the
## report then keeps the last full run's time).
MUTANTS_GLOBS ?=
mutants: $(STAMP)
	$(if $(MUTANTS_GLOBS),,rm -rf mutants)
	set -f; start=$$(date +%s); \
	MAGNB_VASP_FIXTURES=$(CURDIR)/../shared/data/vasp nice -n 10 \
	  $(VENV)/bin/mutmut run --max-children 2 $(or $(MUTANTS_GLOBS),$$($(PY) tools/mutants_report.py --globs)) \
	  > mutants.log 2>&1 || { tail -c 3000 mutants.log; exit 1; }; \
	$(PY) tools/mutants_report.py $(if $(MUTANTS_GLOBS),,--seconds $$(( $$(date +%s) - start )))

## Every benchmark; each writes its own section of bench/RESULTS.md (run on an idle machine).
bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/scrape.py
	$(PY) bench/conv.py
	$(PY) bench/train.py --backend tensorflow
	$(PY) bench/train.py --backend jax
	$(PY) bench/loader.py
	$(PY) bench/collect.py

clean:
	rm -rf $(DEMO) .pytest_cache mutants mutants.log
