"""Base pieces both sides of ssd-edge use: the error hierarchy (`SSDEdgeError`), atomic file
writes and output-path checks. Torch-free and free of every other ssd-edge module: the
runtime, export and the torch side all import from here, never the other way round."""
