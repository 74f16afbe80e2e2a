"""ssd_edge.export: ONNX export, INT8 quantization and TensorRT engine builds.

torch is imported lazily, inside the functions that need it.
"""
