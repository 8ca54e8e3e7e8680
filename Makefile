# All set-up happens here: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all venv test demo bench fuzz stress stress-p2p clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/microcash-devnet demo

# 10^6 fuzz inputs over every tests/fuzz/fuzz_*.py target (atheris if it installs).
fuzz: $(STAMP)
	-$(BIN)/pip install --quiet --disable-pip-version-check -e '.[fuzz]'
	$(BIN)/python -m tests.fuzz --inputs 1000000

# 100 SIGKILL/restart iterations of the feature_dbcrash-style test.
stress: $(STAMP)
	DBCRASH_ITERATIONS=100 $(BIN)/python -m pytest -q -s --timeout 3600 tests/functional/test_dbcrash.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .devnet .devnet-demo .devnet-compare build *.egg-info

# The hostile-peer suite at the issue's full size (64 flooding peers, 2000-header replies).
stress-p2p: $(STAMP)
	MICROCASH_HOSTILE_FULL=1 $(BIN)/python -m pytest -q -s tests/functional/test_p2p_hostile.py
