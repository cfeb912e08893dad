"""metasr.training: the networks of the paper, losses, data, training and evaluation (needs torch)."""

from metasr.training.checkpoint import load_checkpoint, model_config, read_checkpoint, save_checkpoint
from metasr.training.data import build_index, read_frames
from metasr.training.models import ARCHS, EDSR, SRGAN, Bicubic, Discriminator, MetaSRGAN, MetaUpscale, build_model
from metasr.training.pairs import make_pair
from metasr.training.specs import DataSpec, parse_scales, parse_spec

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
    "read_frames",
    "load_checkpoint",
    "model_config",
    "read_checkpoint",
    "save_checkpoint",
]
