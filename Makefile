# Two entry points, both runnable as root on a fresh Debian machine:
#   make demo   install what the demo needs and run it on embedded defaults
#   make test   install everything and run the test matrix (what CI runs): lint once, then the
#               whole suite on Python 3.9 with the minimum versions (RHEL 9's) and on Python 3.13
#               with the newest releases. One leg alone: make test-min / make test-newest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD := .build
INSTALL_EXTRAS := .[test,vmware,libvirt,compat]

# The matrix: interpreters from pyenv, staged where every user can run them (some tests run the
# programs as nobody); scripts/find-python.sh falls back, with a warning.
PYTHON_MIN ?= $(shell scripts/find-python.sh 3.9 $(BUILD))
PYTHON_NEWEST ?= $(shell scripts/find-python.sh 3.13 $(BUILD))
VENV_MIN ?= .venv-py39
VENV_NEWEST ?= .venv-py313
VENV_LINT ?= .venv-lint
CONSTRAINTS_MIN := constraints/py39-min.txt


.PHONY: demo test deps deps-base venv venv-base venv-test sanlock-binding vcsim lint pytest bench clean \
        venv-min venv-newest venv-lint test-min test-newest test-sanlock

demo: deps-base venv-base
	$(PY) scripts/demo.py

test: deps vcsim lint test-min test-newest test-sanlock

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
	$(PY) -m pip install -q -e '$(INSTALL_EXTRAS)'

# A virtualenv $(1) made by the interpreter $(2), made anew when it was made by another one.
define ensure_venv
	@home=$$(sed -n 's/^home = //p' $(1)/pyvenv.cfg 2>/dev/null); \
	if [ ! -x $(1)/bin/python ] || [ "$$home" != "$$(dirname $(2))" ]; then \
		echo "$(2) -m venv $(1)"; rm -rf $(1) && $(2) -m venv $(1) && $(1)/bin/python -m pip install -q --upgrade pip; \
	fi
endef

# Minimum leg: Python 3.9 with exactly the versions in $(CONSTRAINTS_MIN).
venv-min:
	$(call ensure_venv,$(VENV_MIN),$(PYTHON_MIN))
	$(VENV_MIN)/bin/python -m pip install -q -c $(CONSTRAINTS_MIN) -e '$(INSTALL_EXTRAS)'

# Newest leg: the newest Python with the newest release of everything.
venv-newest:
	$(call ensure_venv,$(VENV_NEWEST),$(PYTHON_NEWEST))
	$(VENV_NEWEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '$(INSTALL_EXTRAS)'

# Lint once, on Python 3.9 so that mypy checks against 3.9's standard library, with the newest
# typed releases that still install there (click 7, the minimum, has no type hints; click 8.2+
# no longer parses for a 3.9 target).
venv-lint:
	$(call ensure_venv,$(VENV_LINT),$(PYTHON_MIN))
	$(VENV_LINT)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[lint]'

# Debian's python3-sanlock binding (and only it) in the venv: a link listed in a .pth file.
sanlock-binding: $(PY)
	scripts/sanlock-binding.sh $(VENV)

# govmomi's vCenter simulator with FT support, built from Debian's packaged sources.
vcsim:
	tools/vcsim/build.sh $(BUILD)/ftvcsim

lint: venv-lint
	$(VENV_LINT)/bin/python -m ruff check src tests bench scripts packaging
	$(VENV_LINT)/bin/python -m mypy

# The whole suite in the virtualenv $(1), with its commands first on PATH.
define run_pytest
	@$(1)/bin/python -c 'import platform, sys; print(f"== pytest on Python {platform.python_version()} ({sys.executable})")'
	PATH=$(CURDIR)/$(1)/bin:$$PATH FTVCSIM=$(CURDIR)/$(BUILD)/ftvcsim $(1)/bin/python -m pytest -q tests
endef

pytest:
	$(call run_pytest,$(VENV))

test-min: venv-min vcsim
	$(call run_pytest,$(VENV_MIN))

test-newest: venv-newest vcsim
	$(call run_pytest,$(VENV_NEWEST))

# Debian's python3-sanlock is compiled for Debian's python3 (3.11 on bookworm), so the sanlock
# lease tests, which the two legs skip saying so, run here on .venv (the machine's Python 3.11).
# The sanlock tests are the ones marked `sanlock`: tests/ftagent/test_lease_sanlock.py and the sanlock
# cases of the shared lease fault scenarios (tests/ftagent/test_lease_faults.py).
test-sanlock: venv-test sanlock-binding
	$(PY) -c 'import sanlock'
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q -m sanlock tests/ftagent

bench: venv-test sanlock-binding vcsim
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH FTVCSIM=$(CURDIR)/$(BUILD)/ftvcsim $(PY) -m bench

clean:
	rm -rf $(BUILD) $(VENV) $(VENV_MIN) $(VENV_NEWEST) $(VENV_LINT)
