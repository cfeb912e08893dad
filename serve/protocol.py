"""The wire contract of the served model ``metasr``, shared by the server side and its tests.

One Triton model, named ``metasr``, with dynamic batching:

========= ============ ============== =================================================
tensor    Triton type  shape          meaning
========= ============ ============== =================================================
``image`` ``FP32``     ``[N, h, w]``  N same-size images, values in [0, 1]
``scale`` ``BYTES``    ``[N, 1]``     the scale as text, e.g. ``"1.8"`` or ``"7/3"``
``sr``    ``FP32``     ``[N, H, W]``  ``H = floor(h * scale)``, ``W = floor(w * scale)``
========= ============ ============== =================================================

The scale text obeys ``metasr-run --scale``'s rules (:func:`metasr.core.scale.parse_scale_exact`:
an exact fraction with a denominator up to 1000, between 1 and 8, text over 40 characters
refused unread). The server accepts the whole 1-8 range; whether a scale outside the model's
trained range may be used is the client's decision (``--allow-extrapolation``), as it is for a
local :class:`~metasr.runtime.Upscaler`. The model's identity (``model_id``, the same value a
local ``Upscaler`` computes) and its scale range are parameters of the model configuration, so
a client can record which model made its pixels.
"""

from __future__ import annotations

__all__ = [
    "INPUT_IMAGE",
    "INPUT_SCALE",
    "MAX_BATCH",
    "MAX_INPUT_SIDE",
    "MAX_OUTPUT_PIXELS",
    "MODEL_NAME",
    "OUTPUT_SR",
]

#: Name of the model in the Triton repository and in every request URL.
MODEL_NAME = "metasr"
INPUT_IMAGE = "image"
INPUT_SCALE = "scale"
OUTPUT_SR = "sr"
#: Images in one server-side batch (Triton's ``max_batch_size``); clients split larger batches.
MAX_BATCH = 8
#: Largest input side a request may have.
MAX_INPUT_SIDE = 8192
#: Largest output of one request (all its images together), checked before anything is allocated.
MAX_OUTPUT_PIXELS = 16384 * 16384
