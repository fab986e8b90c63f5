# The README's two commands: `make run` and `make test`. Both set up first.
PYTHON ?= python3
VENV := .venv
SETUP_STAMP := $(VENV)/.meshdesk-setup

.PHONY: setup run test bench

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml scripts/setup.sh scripts/llama_wheel.sh
	bash scripts/setup.sh $(PYTHON)
	touch $(SETUP_STAMP)

# MeshDesk on its built-in default model; extra options go in ARGS, e.g. make run ARGS=--headless
run: setup
	$(VENV)/bin/meshdesk $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python bench/api_overhead.py
