"""The tracker's error: bad detections, frames out of order, unusable settings."""

from __future__ import annotations

from ssd_edge.common.errors import SSDEdgeError


class TrackingError(SSDEdgeError, ValueError):
    """Bad input to the tracker or the line counter: a malformed box, frames out of order,
    an unusable setting. The message names the bad value."""
