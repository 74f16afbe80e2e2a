"""What `ssd-bench` runs: latency of exported models against torch peers in one run."""
