"""ssd_edge.export: ONNX export, INT8 quantization and TensorRT engine builds.

Modules, in pipeline order:

- `to_onnx`: the PyTorch SSD -> ONNX (network only: images -> locs, confs), simplified,
  ModelSpec in metadata_props.
- `onnx_model`: torch-free ONNX helpers: metadata, onnxsim with a fallback, the FP16 graph.
- `parity`: onnxruntime CPU vs PyTorch (or INT8 vs FP32) on real images; the comparison
  itself is the runtime's (`ssd_edge.runtime.parity`), which ssd-doctor uses too.
- `quantize`: onnxruntime static INT8 quantization in QDQ format, `tensorrt` and `cpu` flavours.
- `engine`: TensorRT 10.x / 11.x engine builds and their `.engine.json` sidecars (what the
  installed TensorRT offers, `Capabilities`, is the runtime's `backends.tensorrt_support`).
- `pipeline`: what `ssd-export` runs.

Images come from the runtime's one lister (`image_io.list_images`) or the synthetic sample
data (`ssd_edge.data.synth.sample_images`). torch is imported lazily, inside the functions that
need it; tensorrt only when an engine is built (it cannot be installed on the CPU-only machines
that run the test suite: there
engine builds are refused in one line and their tests skip with that line as the reason).
"""
