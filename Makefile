# Two commands do everything on a fresh machine: `make sample` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The exact torch build this kind of machine keeps on disk; setup.cfg asks only for torch>=2.1.
TORCH  := torch==2.14.1 torchvision==0.29.1
EXTRAS := train,export,runtime,dev

.PHONY: setup test sample clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH) -e ".[$(EXTRAS)]"
	touch $@

setup: $(BIN)/.installed

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) sample_run
