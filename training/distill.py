"""Self-ensemble distillation: a frozen model's exact x8 ensemble as a second target (``--teacher``).

The runtime's self-ensemble (:func:`metasr.runtime.ensemble.self_ensemble`) is better than one
run of the same network in every held-out cell of the model cards, at 8 times the work. Training
a network toward that ensemble as well as toward the HR patch moves part of the gain into one
run: the loss of a step is ``(1 - A) * pixel(sr, hr) + A * pixel(sr, teacher_x8(lr))`` with
``A = --teacher-weight``. The teacher is read once, kept in eval mode and never updated; its
ensemble is the runtime's own code on the same exact grid (the LR patch is mirror-extended at
its far side for the flipped runs), so what the student is taught is what ``--ensemble`` gives.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from metasr.core.errors import CheckpointError, InputError, ScaleError
from metasr.runtime import ensemble
from metasr.training.checkpoint import load_checkpoint, read_checkpoint
from metasr.training.models import arch_spec
from metasr.training.pairs import patch_geometry

__all__ = ["EnsembleTeacher", "check_teacher"]


def check_teacher(path: Path, student_arch: str, patch_size: int, scales: list[Fraction]) -> None:
    """Refuse a teacher that cannot teach this run, before any work.

    Raises:
        CheckpointError: not a readable checkpoint, or not an any-scale model of one image channel.
        InputError: a noise-conditioned student, or a training scale outside the teacher's range or
            whose exact ensemble of an LR patch would more than double it (a larger --patch-size fixes it).
    """
    ckpt = read_checkpoint(path)
    arch = ckpt["config"].get("arch")
    spec = arch_spec(arch)
    if spec.kind != "meta" or spec.noise_input:
        raise CheckpointError(
            f"--teacher {path} holds a {arch!r} model; a teacher must be an any-scale metasrgan checkpoint"
        )
    if arch_spec(student_arch).noise_input:
        raise InputError(f"--teacher does not apply to {student_arch!r} (its input carries a noise map)")
    low, high = ckpt["config"].get("args", {}).get("scale_range", (None, None)) or (None, None)
    for scale in scales:
        if low is not None and not float(low) - 1e-9 <= float(scale) <= float(high) + 1e-9:
            raise InputError(
                f"training scale x{float(scale):g} is outside the x{low:g}-x{high:g} the teacher {path} was trained "
                f"for; narrow --scales or give a teacher trained for it"
            )
        if not _ensemble_fits(patch_size, scale):
            side = patch_geometry(patch_size, scale)[0]
            enough = next(p for p in range(patch_size, 64 * patch_size) if all(_ensemble_fits(p, s) for s in scales))
            raise InputError(
                f"the teacher's exact ensemble at x{float(scale):g} would more than double a {side}-pixel LR patch; "
                f"give --patch-size {enough} or more, or leave out x{float(scale):g} from --scales"
            )


def _ensemble_fits(patch_size: int, scale: Fraction) -> bool:
    try:
        side = patch_geometry(patch_size, scale)[0]
        ensemble.check_ensemble(side, side, scale)
    except ScaleError:
        return False
    return True


class EnsembleTeacher(nn.Module):
    """A frozen network whose exact x8 self-ensemble of an LR batch is a training target."""

    def __init__(self, path: Path, device: torch.device) -> None:
        super().__init__()
        self.model = load_checkpoint(path, map_location=device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = device

    def train(self, mode: bool = True) -> EnsembleTeacher:
        """The teacher stays in eval mode (its batch-norm statistics are the trained ones)."""
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, lr: Tensor, scale: str | Fraction) -> Tensor:
        """``[N, 1, h, w]`` LR -> ``[N, 1, floor(h r), floor(w r)]``: the mean of the 8 orientations."""
        exact = Fraction(scale)

        def run(x: np.ndarray) -> np.ndarray:
            out = self.model(torch.from_numpy(x).to(self.device), exact)
            return out.float().cpu().numpy()

        mean = ensemble.self_ensemble(run, lr.detach().float().cpu().numpy(), exact)
        return torch.from_numpy(mean).to(lr.device, lr.dtype)
