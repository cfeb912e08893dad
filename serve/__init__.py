"""metasr.serve: metasr on Triton Inference Server (``metasr-serve``, model repositories).

Torch-free. The server itself comes from the ``[serve]`` extra (the Triton server bundled with
``nvidia-pytriton``); writing a model repository needs only metasr.
"""

from metasr.serve.protocol import MODEL_NAME
from metasr.serve.repository import RepositoryOptions, model_config_text, write_repository

__all__ = ["MODEL_NAME", "RepositoryOptions", "model_config_text", "write_repository"]
