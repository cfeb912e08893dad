"""Losses of the paper: L1, adversarial, VGG19 perceptual, and their combination.

``total = L1 + 0.001 * adversarial + 0.006 * perceptual`` (each weight settable).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metasr.core.errors import CheckpointError

__all__ = [
    "VGG19_CONV54_INDEX",
    "vgg19_features",
    "VGGPerceptualLoss",
    "generator_adversarial_loss",
    "discriminator_loss",
    "LossWeights",
    "GeneratorLoss",
]

# torchvision's vgg19 "features" layout: numbers are conv widths, "M" a 2x2 max pool.
_VGG19_CFG: list[int | str] = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
]
#: ``features[:36]`` ends with conv5_4 + ReLU, before the last max pool (SRGAN's "VGG54").
VGG19_CONV54_INDEX = 36
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features() -> nn.Sequential:
    """The convolutional part of VGG19 with torchvision's module indices (``features.N.*``)."""
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            cin = int(v)
    return nn.Sequential(*layers)


class VGGPerceptualLoss(nn.Module):
    """Mean squared distance of VGG19 conv5_4 features (after ReLU, before the last pool).

    Args:
        weights: Path to a torchvision-format VGG19 state dict (``features.N.weight`` keys;
            ``classifier.*`` keys are ignored). Nothing is downloaded.
        layer_index: Cut of ``features``; default 36 (conv5_4 + ReLU).
    """

    def __init__(self, weights: str | os.PathLike, layer_index: int = VGG19_CONV54_INDEX) -> None:
        super().__init__()
        self.features = vgg19_features()[:layer_index]
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"VGG19 weights {path} do not exist; pass a torchvision vgg19 state dict (.pth)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to read is the same user error
            raise CheckpointError(f"{path} is not a readable VGG19 state dict ({type(e).__name__})") from e
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} is not a VGG19 state dict (found {type(state).__name__})")
        wanted = {k: v for k, v in state.items() if k.startswith("features.")}
        own = {f"features.{k}" for k in self.features.state_dict()}
        missing = sorted(own - set(wanted))
        if missing:
            raise CheckpointError(f"{path} is not a torchvision VGG19 state dict: missing {missing[:3]}")
        try:
            self.load_state_dict({k: wanted[k] for k in own})
        except RuntimeError as e:
            raise CheckpointError(f"{path} does not fit VGG19 ({str(e).splitlines()[0]})") from e
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("img_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        # The feature network is frozen: it always stays in eval mode.
        return super().train(False)

    def _embed(self, x: Tensor) -> Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return self.features((x - self.img_mean) / self.img_std)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        return F.mse_loss(self._embed(sr), self._embed(hr).detach())


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """``-log D(G(x))`` from discriminator logits, computed stably."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``-log D(hr) - log(1 - D(G(lr)))`` from logits, computed stably."""
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


#: Floor of a patch's MSE in the ``psnr`` pixel loss (a patch reproduced exactly counts as 80 dB).
PSNR_LOSS_FLOOR = 1e-8


def psnr_loss(sr: Tensor, hr: Tensor) -> Tensor:
    """Minus the mean PSNR of the patches of a batch, in dB, for images in [0, 1].

    ``mean_i 10 log10(MSE_i + floor)``: the gradient of each patch is its MSE gradient divided by
    its own MSE, so every patch weighs the same in the mean PSNR that evaluation reports, whether
    it is noisy (large error) or clean (small error). Plain MSE lets the noisy patches' large
    errors set the direction.
    """
    mse = (sr - hr).pow(2).flatten(1).mean(1)
    return (10.0 / math.log(10.0)) * torch.log(mse + PSNR_LOSS_FLOOR).mean()


#: The pixel terms by ``--pixel-loss`` name.
_PIXEL_TERMS = {"l1": F.l1_loss, "mse": F.mse_loss, "psnr": psnr_loss}
#: ``--pixel-loss`` choices.
PIXEL_LOSSES = tuple(_PIXEL_TERMS)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the paper's combined loss."""

    l1: float = 1.0
    adversarial: float = 1e-3
    perceptual: float = 6e-3
    #: The pixel term: ``"l1"`` (the paper's), ``"mse"`` (its minimiser is the conditional mean,
    #: which is what PSNR rewards where the input leaves the answer uncertain, as under noise) or
    #: ``"psnr"`` (:func:`psnr_loss`: the mean PSNR of the patches, each patch weighing the same).
    pixel: str = "l1"


class GeneratorLoss(nn.Module):
    """``l1 * pixel + adversarial * adv + perceptual * VGG``; terms without a model are skipped.

    The pixel term is L1, MSE or minus the mean patch PSNR (``weights.pixel``), logged under its own
    name; the psnr term is in dB, so the adversarial and perceptual weights were not set for it.

    Returns the total and a dict of the unweighted terms (floats, for logging).
    """

    def __init__(self, weights: LossWeights = LossWeights(), perceptual: VGGPerceptualLoss | None = None) -> None:
        super().__init__()
        self.weights = weights
        self.perceptual = perceptual
        if weights.pixel not in _PIXEL_TERMS:
            raise ValueError(f"unknown pixel loss {weights.pixel!r}; choose one of: {', '.join(PIXEL_LOSSES)}")
        self._pixel_term = _PIXEL_TERMS[weights.pixel]

    def pixel_term(self, sr: Tensor, target: Tensor) -> Tensor:
        """The pixel term alone (unweighted), e.g. toward a teacher's output."""
        return self._pixel_term(sr, target)

    def forward(self, sr: Tensor, hr: Tensor, fake_logits: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        pixel = self._pixel_term(sr, hr)
        total = self.weights.l1 * pixel
        terms = {self.weights.pixel: float(pixel.detach())}
        if fake_logits is not None and self.weights.adversarial:
            adv = generator_adversarial_loss(fake_logits)
            total = total + self.weights.adversarial * adv
            terms["adversarial"] = float(adv.detach())
        if self.perceptual is not None and self.weights.perceptual:
            per = self.perceptual(sr, hr)
            total = total + self.weights.perceptual * per
            terms["perceptual"] = float(per.detach())
        return total, terms
