# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo
KERNEL := magnb

.PHONY: demo test test-fast lint format bench clean venv

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
	rm -rf $(DEMO) .pytest_cache
