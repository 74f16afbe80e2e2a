"""The CUDA side of the runtime: which GPU is here, pycuda resources, and the decode + NMS
kernel (`decode_nms.cu`) with its launch plan and launcher. Nothing here imports pycuda
until a function that needs the GPU runs."""
