# Two commands do everything on a fresh machine: `make sample` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The exact torch build this kind of machine keeps on disk; setup.cfg asks only for torch>=2.1.
TORCH  := torch==2.14.1 torchvision==0.29.1
EXTRAS := train,export,runtime,openvino,dev,serve-client,demo-mqtt
# ssd-serve runs in its own venv: nvidia-pytriton 0.7 needs numpy<2 (setup.cfg, extra serve)
SERVE_VENV ?= .venv-serve

.PHONY: setup test lint sample clean gpu-kit

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH) -e ".[$(EXTRAS)]"
	# the tracking benchmark's peers (tests/test_bench_mot.py), from their own packages; bytetracker
	# pins torch 1.13, so it goes in without its dependencies (lap, scipy and torch are already here)
	$(BIN)/python -m pip install --quiet --no-deps bytetracker==0.3.2
	$(BIN)/python -m pip install --quiet lap filterpy sort-tracker-py==1.0.2
	touch $@

$(SERVE_VENV)/bin/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet -e ".[runtime,serve]"
	touch $@

# The real TensorRT Python bindings (about 1 MB each, no TensorRT libraries, no GPU), one folder per
# version, for tests/test_tensorrt_bindings.py: 10.3 (JetPack 6), 11.4, and 8.6.1, which must be refused.
TRT := .trt
$(TRT)/.installed: $(BIN)/.installed
	rm -rf $(TRT)
	$(BIN)/python -m pip install --quiet --no-deps --no-compile --target $(TRT)/8.6 tensorrt-bindings==8.6.1 \
		|| $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'  # 8.6.1 has wheels up to Python 3.11
	$(BIN)/python -m pip install --quiet --no-deps --no-compile --target $(TRT)/10.3 tensorrt-cu12-bindings==10.3.0
	$(BIN)/python -m pip install --quiet --no-deps --no-compile --target $(TRT)/11.4 tensorrt-cu12-bindings==11.4.0.106
	touch $@

setup: $(BIN)/.installed $(SERVE_VENV)/bin/.installed $(TRT)/.installed

# ruff (setup.cfg's dev extra; its rules in pyproject.toml): unused imports, undefined names,
# import order, lines over 120 characters. `$(BIN)/ruff check --fix .` sorts imports and drops unused ones.
lint: $(BIN)/.installed
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(SERVE_VENV) runs/sample $(TRT)

sample: setup
	test -d dataset_coco || $(BIN)/ssd-dataset synth dataset_coco --train 400 --val 100 --seed 0
	$(BIN)/python train_ssd.py --arch mobilenetv3_ssd --datapath dataset_coco --epochs 10 --batch-size 5 --lr 0.001 --save runs/sample/ssd.pt
	$(BIN)/ssd-export --weights runs/sample/ssd.pt --format onnx,int8 --int8-flavour cpu,tensorrt --calib-data dataset_coco --calib-images 100 \
		--select-images 200
	$(BIN)/ssd-eval --weights runs/sample/ssd.pt runs/sample/ssd.onnx runs/sample/ssd.int8.onnx --datapath dataset_coco --json runs/sample/eval.json
	$(BIN)/ssd-predict --model runs/sample/ssd.onnx --output runs/sample/predictions --quiet dataset_coco/val
	$(BIN)/ssd-bench --model runs/sample/ssd.onnx --model runs/sample/ssd.int8.onnx --batch 1 --runs 100 --warmup 10 \
		--peer torchvision --compare-torch runs/sample/ssd.pt --data dataset_coco \
		--markdown runs/sample/bench.md --json runs/sample/bench.json --plot runs/sample/bench.png

# An offline wheelhouse for a GPU box without network (scripts/build_gpu_kit.sh says what is in
# it): pycuda built here against PyPI's CUDA 13 headers, the project, its runtime and test
# dependencies, scripts/gpu_check.py. Needs network here; pycuda compiles for a few minutes.
# GPU_KIT=folder, KIT_PYTHON=interpreter of the target's Python version (default: the venv's,
# which must exist: `make setup`), KIT_NVCC=1 adds nvcc.
GPU_KIT ?= .gpu-kit
gpu-kit:
	GPU_KIT=$(GPU_KIT) KIT_PYTHON=$${KIT_PYTHON:-$(BIN)/python} scripts/build_gpu_kit.sh
