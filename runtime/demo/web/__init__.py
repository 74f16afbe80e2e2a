"""`ssd-demo --web`: the demo's live video and detections in a browser (server.py: WebViewer),
fed by the loop through the FrameHub (hub.py); where it listens and who may watch
(address.py, which imports neither OpenCV nor the server, for the command line's checks)."""
