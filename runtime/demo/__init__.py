"""The live demo: camera and stream sources, frame capture, display, recording, the loop."""
