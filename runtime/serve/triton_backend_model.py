"""The Python-backend model Triton runs for each ssd-serve model: PyTriton's own proxy
model (copied beside this file into the model store, renamed `pytriton_model.py`; this
file becomes `model.py`) with one guard in front of it.

A request whose input has no elements, e.g. a raw tensor (1, 0, 0, 3), is answered here
with the message the model function gives (runtime/serve/inputs.py): PyTriton's tensor
store cannot hold a zero-size array (`memoryview: cannot cast view with zeros in shape`),
which failed the whole execution with HTTP 500 and PyTriton's traceback. The other requests
of the execution go on to PyTriton as usual.

Runs inside Triton's Python-backend stub: imports only what that stub has (no ssd_edge).
"""

import triton_python_backend_utils as pb_utils  # type: ignore # only inside Triton's Python backend

from .pytriton_model import TritonPythonModel as PyTritonModel  # type: ignore # PyTriton's model.py


def empty_input(request) -> str | None:
    """Why `request` cannot be served when one of its inputs has no elements, else None."""
    for tensor in request.inputs():
        shape = tuple(int(d) for d in tensor.shape())
        if 0 in shape:
            if shape[0] == 0:
                return f"{tensor.name()}: empty request (0 images)"
            return f"{tensor.name()}: empty images of shape {shape[1:]}"
    return None


def refusal(message: str):
    """A response that fails its request with `message` (HTTP 400 where the backend has codes)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel(PyTritonModel):
    def execute(self, triton_requests):
        refused = [empty_input(request) for request in triton_requests]
        if not any(refused):
            return super().execute(triton_requests)
        served = [request for request, why in zip(triton_requests, refused) if why is None]
        answers = iter(super().execute(served) if served else [])
        return [next(answers) if why is None else refusal(why) for why in refused]
