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
	rm -rf $(VENV) runs/sample

sample: setup
	test -d dataset_coco || $(BIN)/ssd-dataset synth dataset_coco --train 400 --val 100 --seed 0
	$(BIN)/python train_ssd.py --arch mobilenetv3_ssd --datapath dataset_coco --epochs 10 --batch-size 5 --lr 0.001 --save runs/sample/ssd.pt
	$(BIN)/ssd-eval --weights runs/sample/ssd.pt --datapath dataset_coco --json runs/sample/eval.json
