"""Command-line entry points: each module parses arguments and calls library functions."""
