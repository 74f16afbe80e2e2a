"""The network runners behind `Detector`: onnxruntime (CPU, CUDA) and TensorRT engines."""
