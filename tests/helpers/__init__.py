"""Code the tests share (and benchmarks/bench_serve.py): generated inputs, stand-ins, the CUDA
emulations, the TensorRT fakes and probe, a server launcher. Imports nothing itself, so a
torch-free install can import the modules it needs."""
