"""ssd-bench's one home: latency of exported models per stage (`latency`), the machine it ran
on (`machine`), the report (`report`, `plot`) and the torch peers timed in the same run
(`peers`, loaded only when asked for, so ssd-bench runs torch-free on a Jetson). The scripts
of the benchmark suite live in the top-level `benchmarks/` folder."""
