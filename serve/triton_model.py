"""The Triton Python-backend model of metasr; :func:`metasr.serve.write_repository` copies this
file to ``<repository>/metasr/1/model.py``.

It runs in Triton's Python backend stub, in any Triton (the NGC container or the one bundled
with ``nvidia-pytriton``) whose Python has metasr installed. Each model instance loads one
:class:`~metasr.runtime.Upscaler` on the export beside it (``1/export/``) with the device,
precision and threads the configuration's ``parameters`` name; requests are checked one by one
and run in groups of one (scale, size) by :class:`metasr.serve.backend.RequestHandler`. A bad
request gets its own error response; the instance keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


class TritonPythonModel:
    """Triton's Python-backend entry points: ``initialize``, ``execute``, ``finalize``."""

    def initialize(self, args: dict[str, str]) -> None:
        from metasr.runtime.upscaler import Upscaler
        from metasr.serve.backend import RequestHandler

        config = json.loads(args["model_config"])
        export = Path(args["model_repository"]) / args["model_version"] / "export"
        device = _parameter(config, "device", "cpu")
        if args.get("model_instance_kind") == "GPU" and ":" not in device and device != "cpu":
            # the GPU Triton gave this instance (KIND_AUTO on a GPU machine: CUDA on that GPU)
            device = f"{'cuda' if device == 'auto' else device}:{args.get('model_instance_device_id', '0')}"
        threads = _parameter(config, "threads", "")
        self.upscaler = Upscaler(
            export,
            device=device,
            precision=_parameter(config, "precision", "fp32"),
            threads=int(threads) if threads else None,
        )
        self.handler = RequestHandler(self.upscaler)

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        from metasr.core.cli import one_line
        from metasr.serve.protocol import INPUT_IMAGE, INPUT_SCALE, OUTPUT_SR

        pairs = []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, INPUT_IMAGE)
            scale = pb_utils.get_input_tensor_by_name(request, INPUT_SCALE)
            pairs.append((None if image is None else image.as_numpy(), None if scale is None else scale.as_numpy()))
        responses = []
        for result in self.handler.handle(pairs):
            if isinstance(result, np.ndarray):
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_SR, result)]))
            else:
                error = pb_utils.TritonError(f"metasr: {one_line(str(result))}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        return responses

    def finalize(self) -> None:
        self.upscaler = None
