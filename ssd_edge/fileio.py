"""Atomic file writing for the torch side: the runtime's implementation (the bottom layer)."""

from ssd_edge.runtime.atomic import atomic_path, write_bytes_atomic, write_text_atomic

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic"]
