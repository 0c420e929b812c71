# Two entry points, both runnable as root on a fresh Debian machine with Python 3.11:
#   make demo   install what the demo needs and run it on embedded defaults
#   make test   install everything and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD := .build

.PHONY: demo test deps deps-base venv venv-base venv-test sanlock-binding vcsim lint pytest bench clean

demo: deps-base venv-base
	$(PY) scripts/demo.py

test: deps venv-test sanlock-binding vcsim lint pytest

deps-base:
	scripts/install-deps.sh base

deps:
	scripts/install-deps.sh all

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# What the demo needs: the project alone.
venv-base: $(PY)
	$(PY) -m pip install -q -e .

# The programs with both reporter sources (libvirt-python builds against libvirt-dev).
venv: $(PY)
	$(PY) -m pip install -q -e '.[vmware,libvirt]'

venv-test: $(PY)
	$(PY) -m pip install -q -e '.[test,vmware,libvirt,compat]'

# Debian's python3-sanlock binding (and only it) in the venv: a link listed in a .pth file.
sanlock-binding: $(PY)
	scripts/sanlock-binding.sh $(VENV)

# govmomi's vCenter simulator with FT support, built from Debian's packaged sources.
vcsim:
	tools/vcsim/build.sh $(BUILD)/ftvcsim

lint:
	$(PY) -m ruff check src tests bench scripts packaging
	$(PY) -m mypy

pytest:
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH FTVCSIM=$(CURDIR)/$(BUILD)/ftvcsim $(PY) -m pytest -q tests

bench: venv-test sanlock-binding vcsim
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH FTVCSIM=$(CURDIR)/$(BUILD)/ftvcsim $(PY) -m bench

clean:
	rm -rf $(BUILD) $(VENV)
