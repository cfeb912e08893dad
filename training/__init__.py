"""metasr.training: the networks of the paper, losses, data, training and evaluation (needs torch)."""

from metasr.training.checkpoint import load_checkpoint, model_config, read_checkpoint, save_checkpoint
from metasr.training.data import DataSpec, build_index, make_pair, parse_scales, parse_spec
from metasr.training.models import ARCHS, EDSR, SRGAN, Bicubic, Discriminator, MetaSRGAN, MetaUpscale, build_model

__all__ = [
    "ARCHS",
    "EDSR",
    "SRGAN",
    "Bicubic",
    "Discriminator",
    "MetaSRGAN",
    "MetaUpscale",
    "DataSpec",
    "build_index",
    "build_model",
    "make_pair",
    "parse_scales",
    "parse_spec",
    "load_checkpoint",
    "model_config",
    "read_checkpoint",
    "save_checkpoint",
]
