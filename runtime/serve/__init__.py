"""ssd_edge.runtime.serve: the Detector behind Triton Inference Server (through PyTriton),
and a client for it. The server side needs the `serve` extra (its own environment: PyTriton
0.7 needs numpy<2); the client side only `tritonclient` (extra `serve-client`)."""
