"""Benchmark scripts and their recorded results (results/). A package so that scripts share
code by name, without sys.path edits: run each from the repository root as
`python -m benchmarks.NAME` (see README.md here)."""
