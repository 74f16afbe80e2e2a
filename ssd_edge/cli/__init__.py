"""Command-line entry points: each module parses arguments and calls library functions."""

# What ssd-predict and ssd-demo show unless told otherwise. A model's own score threshold
# is the evaluation one (0.001 for SSDLite, as torchvision): right for mAP, hundreds of
# boxes on a picture. ssd-eval and the Detector API keep the model's.
SHOW_SCORE_THRESHOLD = 0.3
