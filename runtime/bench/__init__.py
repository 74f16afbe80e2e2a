"""Latency measurement of the runtime: what `ssd-bench` times, per stage, and how it reports."""
