"""The network runners behind `Detector`: onnxruntime (CPU, CUDA), OpenVINO (Intel CPU, GPU, NPU)
and TensorRT engines."""
