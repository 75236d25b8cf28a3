# Two commands a newcomer needs: `make demo` and `make test`. Everything installs into .venv,
# with constraints.txt pinning every version.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sonofm-installed
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt

# Which build of torch 2.13.0 goes into .venv. PyPI's torch==2.13.0 for Linux is the CUDA 13 build and
# pulls about 20 nvidia-*/cuda-*/triton wheels (several GB), and a version pin cannot tell the builds
# apart, so the wheel is chosen here, installed first, and the project install finds torch satisfied.
#   make install                     CPU wheel, torch==2.13.0+cpu from download.pytorch.org/whl/cpu (default
#                                    on Linux; if that index is unreachable, pip's own sources, e.g. a mirror)
#   make install TORCH=cu130         CUDA 13.0 wheel, torch==2.13.0+cu130 from download.pytorch.org/whl/cu130
#   make install TORCH=pypi          PyPI's build: CUDA on Linux, CPU/MPS on macOS (the default on macOS)
#   TORCH_INDEX=URL                  another index serving the chosen wheel (empty: pip's configured sources)
# Switching an existing .venv: `make clean install TORCH=...`.
TORCH_VERSION := 2.13.0
TORCH ?= $(if $(filter Darwin,$(shell uname -s)),pypi,cpu)
TORCH_SPEC := torch==$(TORCH_VERSION)$(if $(filter pypi,$(TORCH)),,+$(TORCH))
TORCH_INDEX ?= $(if $(filter pypi,$(TORCH)),,https://download.pytorch.org/whl/$(TORCH))

.PHONY: install demo test test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	@if $(BIN)/python -c "import importlib.metadata as m, sys; sys.exit(m.version('torch') != sys.argv[1])" \
		"$(subst torch==,,$(TORCH_SPEC))" 2>/dev/null; then echo "$(TORCH_SPEC) already installed"; else \
	  idx="$(TORCH_INDEX)"; \
	  if [ -n "$$idx" ] && ! $(BIN)/python -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=5)" \
		"$$idx/torch/" 2>/dev/null; then \
	    echo "$$idx is not reachable: looking for $(TORCH_SPEC) in pip's configured sources"; idx=""; fi; \
	  echo "installing $(TORCH_SPEC)$${idx:+ from $$idx}"; \
	  $(PIP_INSTALL) $${idx:+--extra-index-url $$idx} "$(TORCH_SPEC)" || { echo "no $(TORCH_SPEC) found;" \
		"set TORCH_INDEX to an index that serves it, or choose another build (see TORCH in the Makefile)"; exit 1; }; fi
	$(PIP_INSTALL) -e ".[test,eval,serve,tb]"
	@$(BIN)/python -c "import importlib.metadata as m, sys; bad = sorted({d.metadata['Name'] for d in m.distributions() \
		if d.metadata['Name'].lower().startswith(('nvidia-', 'cuda-', 'triton'))}); \
		sys.exit(f'TORCH=$(TORCH) but CUDA packages were installed: {bad}' if bad and '$(TORCH)' == 'cpu' else 0)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sonofm demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)
	$(PIP_INSTALL) -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
