# All set-up happens here: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all venv test demo bench clean stress-p2p

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

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .devnet .devnet-demo build *.egg-info

# The hostile-peer suite at the issue's full size (64 flooding peers, 2000-header replies).
stress-p2p: $(STAMP)
	MICROCASH_HOSTILE_FULL=1 $(BIN)/python -m pytest -q tests/functional/test_p2p_hostile.py
