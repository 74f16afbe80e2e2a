"""Datasets (COCO, flat COCO-JSON, Pascal VOC), the synthetic sample data, transforms."""
