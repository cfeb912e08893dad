"""Validation during training: PSNR of fixed held-out LR/HR pairs, which selects ``best.pt``."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor, nn

from metasr.training.data import FrameCache, ImageIndex, load_slice
from metasr.training.degradations import Degradation
from metasr.training.models import noise_map as with_noise_map
from metasr.training.pairs import make_pair

__all__ = ["psnr", "ValidationSet"]


def psnr(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """PSNR in dB for images in [0, 1] (data range 1)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


class ValidationSet:
    """Fixed LR/HR pairs (evaluation protocol) of held-out images at a few scales.

    ``degradations`` are cycled over the images (image ``i`` uses ``degradations[i % n]``; noise
    from a fixed seed), so the PSNR that selects ``best.pt`` covers each of them.
    """

    def __init__(
        self,
        index: ImageIndex,
        scales: list[Fraction],
        max_images: int = 16,
        degradations: tuple[Degradation, ...] = (Degradation(),),
        noise_map: bool = False,
    ) -> None:
        slices = index.slices
        if max_images and len(slices) > max_images:
            picks = np.linspace(0, len(slices) - 1, max_images).round().astype(int)
            slices = [slices[i] for i in sorted(set(picks.tolist()))]
        self.scales = scales
        self.pairs: list[tuple[Fraction, Tensor, Tensor]] = []
        cache = FrameCache(4, index.intensity)
        for i, ref in enumerate(slices):
            image = load_slice(ref, cache)
            degradation = degradations[i % len(degradations)]
            for s in scales:
                rng = np.random.default_rng([i, s.numerator, s.denominator])
                lr, hr = make_pair(image, s, degradation, rng)
                lr = lr[None]  # [C, h, w]: the image, then its noise map for a noise-conditioned model
                if noise_map:
                    lr = with_noise_map(lr[None], degradation.sigma)[0]
                self.pairs.append((s, lr, hr))

    def __len__(self) -> int:
        return len(self.pairs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Mean PSNR per scale and overall (``psnr``), output clipped to [0, 1]."""
        was_training = model.training
        model.eval()
        per: dict[Fraction, list[float]] = {s: [] for s in self.scales}
        for s, lr, hr in self.pairs:
            sr = model(lr[None].to(device), s).clamp_(0, 1)[0, 0].cpu()
            per[s].append(psnr(sr, hr))
        model.train(was_training)
        out = {f"psnr_x{float(s):g}": float(np.mean(v)) for s, v in per.items() if v}
        out["psnr"] = float(np.mean(list(out.values())))
        return out
