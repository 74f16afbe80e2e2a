"""COCO evaluation (pycocotools) of PyTorch checkpoints and exported models."""
