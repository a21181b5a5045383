# The two commands: `make run` starts a node on the embedded default, `make test` runs the
# whole trial suite (SQLite, and PostgreSQL when its server binaries are installed).

# The virtualenv's interpreter: the distribution's /usr/bin/python3 where it can make one
# (Debian builds it with PGO and LTO, and meteord needs 20-30 % less CPU on it than on a
# build without them, such as pyenv's default), else the python3 on PATH.
PYTHON ?= $(shell /usr/bin/python3 -c 'import ensurepip, sys; assert sys.version_info >= (3, 11)' \
	2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := setup.py $(shell find meteord twisted -name '*.py' -o -name '*.toml' -o -name '*.sql')
TESTS ?= tests

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

# Installed non-editably (an editable install hides the twistd plugin), then the plugin cache
# is written once so that twistd does not rescan site-packages at every start.
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install --quiet '.[test]'
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

run: $(VENV)/.installed
	$(BIN)/twistd -n meteord

test: $(VENV)/.installed
	$(BIN)/python -m twisted.trial $(TESTS)

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
