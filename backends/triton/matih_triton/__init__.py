"""matih-triton: the ``triton`` serving backend of matih-lite (Triton Inference Server over HTTP).

``serving = { backend = "triton", url = "http://triton:8000", repository = "<folder>" | "s3://..." }``:
model versions are written into Triton's model repository (``<name>/<version>/`` and a generated
``config.pbtxt``), loaded through the repository extension and called with binary tensors. See
:mod:`matih_triton.backend`.
"""

__version__ = "0.1.0"
