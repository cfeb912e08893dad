"""The networks of the paper: Meta-SRGAN, its Meta-Upscale module, and the baselines.

Every generator follows one calling convention: ``model(lr, scale)`` with ``lr`` a float tensor
[N, 1, h, w] in [0, 1] returns [N, 1, floor(h*r), floor(w*r)] in [0, 1] intensity space (not
clipped). Normalisation (mean/std of the training data) happens inside the model and is part of
its constructor arguments, so checkpoints and exports describe themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metasr.core.scale import DEFAULT_SCALE_RANGE, Scale, axis_mapping

__all__ = [
    "NORM_MEAN",
    "NORM_STD",
    "ResidualBlock",
    "SRResNetTrunk",
    "MetaUpscale",
    "MetaSRGAN",
    "SRGAN",
    "EDSR",
    "Bicubic",
    "Discriminator",
    "ARCHS",
    "ARCH_SPECS",
    "ArchSpec",
    "EXPORTABLE_ARCHS",
    "TRAINABLE_ARCHS",
    "arch_spec",
    "build_model",
    "meta_srgan",
    "meta_srgan_nc",
    "noise_map",
    "NOISE_MAP_UNIT",
    "srgan_x2",
    "srgan_x3",
    "srgan_x4",
    "edsr_x2",
    "edsr_baseline_x2",
]

#: Normalisation of the paper (pixel values in [0, 1]).
NORM_MEAN = 0.370
NORM_STD = 0.117

ScaleLike = str | Real | Fraction | Scale


class _Normalized(nn.Module):
    """Mixin holding the intensity normalisation as constructor arguments."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"normalisation std must be > 0, got {std}")
        self.mean = float(mean)
        self.std = float(std)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


def _check_input(lr: Tensor, channels: int = 1) -> None:
    if lr.dim() != 4 or lr.shape[1] != channels:
        what = "a grayscale batch [N, 1, h, w]" if channels == 1 else "[N, 2, h, w]: the image and its noise map"
        raise ValueError(f"expected {what}, got shape {tuple(lr.shape)}")


#: Noise level that the noise map of a noise-conditioned model encodes as 1 (sigma 0.05 of the range).
NOISE_MAP_UNIT = 0.05


def noise_map(lr: Tensor, sigma: float | Tensor) -> Tensor:
    """``lr`` [N, 1, h, w] with its noise map appended: [N, 2, h, w], channel 1 = sigma / NOISE_MAP_UNIT.

    ``sigma`` (a fraction of the [0, 1] range) is one number, or one per image ([N]).
    """
    sigma_t = torch.as_tensor(sigma, dtype=lr.dtype, device=lr.device).reshape(-1, 1, 1, 1)
    return torch.cat([lr, (sigma_t / NOISE_MAP_UNIT).expand(lr.shape[0], 1, *lr.shape[2:])], dim=1)


class ResidualBlock(nn.Module):
    """SRResNet block: conv3x3-BN-ReLU-conv3x3-BN with an identity skip."""

    def __init__(self, features: int = 64, act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.BatchNorm2d(features),
            act_layer(),
            nn.Conv2d(features, features, 3, padding=1),
            nn.BatchNorm2d(features),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRResNetTrunk(nn.Module):
    """The SRGAN feature trunk: 9x9 head + PReLU, residual blocks, conv+BN, global skip."""

    def __init__(self, in_channels: int = 1, features: int = 64, num_blocks: int = 5) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(in_channels, features, 9, padding=4), nn.PReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(features) for _ in range(num_blocks)])
        self.tail = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features))

    def forward(self, x: Tensor) -> Tensor:
        head = self.head(x)
        return head + self.tail(self.blocks(head))


class MetaUpscale(nn.Module):
    """Meta-Upscale module (Hu et al. 2019) with the exact index contract of metasr.

    A weight-prediction network ``Linear(3, hidden) -> ReLU -> Linear(hidden, 9*C*Cout)`` maps
    ``(1/r, row_offset, col_offset)`` of each HR pixel to a 3x3 kernel over the ``C`` feature
    channels, laid out in ``F.unfold`` order (element ``(c*9 + kh*3 + kw) * Cout + o``), applied
    at the LR pixel ``(index_row[i], index_col[j])``.

    The per-pixel kernels are never materialised. Because the WPN has one hidden layer,
    ``SR(i,j) = sum_m ReLU(h_m(i,j)) * Z_m(idx) + B(idx)`` where ``Z`` and ``B`` are 3x3
    convolutions of the features built from the second layer's weight and bias, and
    ``h(i,j) = W1 (1/r, off_r, off_c) + b1`` is separable into row and column terms. Memory per
    HR pixel is ``hidden`` floats, and inference processes HR rows in bounded chunks.

    **Flat-field constraint** (``flat_field=True``, the default for new models). At a scale
    ``p/q`` an image is upscaled by ``p*p`` kernel classes; on a flat region (spatially constant
    features) class ``(a, b)`` answers ``sum_c F_c * sum_taps W_ab[c, tap]``, so unless every
    class has the same per-channel tap sum (its DC gain) the output carries a period-``p``
    pattern. The constraint is exact by construction, not a penalty: the last layer's columns
    ``A`` are split per channel into their tap mean ``A_dc`` (one value for the 9 taps) and the
    zero-sum rest ``A0``, and the kernel is ``A0 ReLU(h(i,j)) + A_dc ReLU(h_ref) + b2`` with
    ``h_ref = h(1/r, 0, 0)``, the hidden pre-activation of the class with zero offsets (present
    at every scale). The class-dependent part has zero DC per channel; the DC gain depends on
    the scale only. The identity above still holds with ``Z`` built from ``A0`` and a
    scale-dependent DC term added to the bias convolution ``B``. ``flat_field=False`` is the
    unconstrained WPN of the paper (checkpoints saved before the constraint load that way).
    """

    def __init__(
        self,
        in_channels: int = 64,
        out_channels: int = 1,
        hidden: int = 256,
        kernel_size: int = 3,
        chunk_elements: int = 1 << 25,
        flat_field: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden = hidden
        self.kernel_size = kernel_size
        self.flat_field = bool(flat_field)
        #: Inference only: at most this many elements of the [N, hidden*Cout, rows, W] gather at once.
        self.chunk_elements = chunk_elements
        taps = in_channels * kernel_size * kernel_size
        self.wpn = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, taps * out_channels))

    def conv_weights(self) -> tuple[Tensor, Tensor]:
        """3x3 convolution weights of ``Z`` [Cout*hidden, C, k, k] and ``B`` [Cout, C, k, k].

        ``Z`` channel ``o*hidden + m`` holds column ``m`` of the WPN's last layer for output ``o``.
        """
        k, c, co, m = self.kernel_size, self.in_channels, self.out_channels, self.hidden
        # weight row (c*k*k + tap) * Cout + o  ->  [C, k, k, Cout, hidden] -> [Cout, hidden, C, k, k]
        wz = self.class_weight().view(c, k, k, co, m).permute(3, 4, 0, 1, 2).reshape(co * m, c, k, k)
        wb = self.wpn[2].bias.view(c, k, k, co).permute(3, 0, 1, 2)
        return wz, wb

    def _tap_view(self, weight: Tensor) -> Tensor:
        """The last layer's weight [taps*C*Cout, hidden] as [C, taps, Cout, hidden]."""
        k2 = self.kernel_size * self.kernel_size
        return weight.view(self.in_channels, k2, self.out_channels, weight.shape[-1])

    def class_weight(self) -> Tensor:
        """The part of the last layer that varies between kernel classes, [taps*C*Cout, hidden].

        With the flat-field constraint: the weight minus its per-channel mean over the taps
        (``A0``, zero DC gain per channel); otherwise the weight itself.
        """
        weight = self.wpn[2].weight
        if not self.flat_field:
            return weight
        taps = self._tap_view(weight)
        return (taps - taps.mean(dim=1, keepdim=True)).reshape(weight.shape)

    def dc_weight(self) -> Tensor:
        """``A_dc``: the per-channel tap mean of the last layer, [C, Cout, hidden] (flat field only)."""
        return self._tap_view(self.wpn[2].weight).mean(dim=1)

    def reference_activation(self, inv_scale: Tensor) -> Tensor:
        """``ReLU(h(1/r, 0, 0))`` [..., hidden]: the hidden layer of the zero-offset class."""
        first = self.wpn[0]
        w1 = first.weight.to(inv_scale.dtype)
        return torch.relu(w1[:, 0] * inv_scale[..., None] + first.bias.to(inv_scale.dtype))

    def scale_bias_weight(self, wb: Tensor, scale: Scale, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The bias convolution ``B`` [Cout, C, k, k] (``wb`` of :meth:`conv_weights`) at ``scale``, with the
        flat-field DC term."""
        if not self.flat_field:
            return wb.to(dtype)
        inv = torch.tensor(scale.inv, dtype=torch.float32, device=device).to(dtype)
        dc = torch.einsum("com,m->oc", self.dc_weight().to(dtype), self.reference_activation(inv))
        return wb.to(dtype) + dc[:, :, None, None]

    def predict_kernels(self, wpn_in: Tensor) -> Tensor:
        """The per-pixel kernels for WPN inputs ``(1/r, row_offset, col_offset)`` [..., 3].

        Returns [..., taps*C*Cout] in the unfold layout; the reference formulation of what
        :meth:`forward` computes without materialising them (tests and exports compare to it).
        """
        first, last = self.wpn[0], self.wpn[2]
        hidden = torch.relu(F.linear(wpn_in, first.weight.to(wpn_in.dtype), first.bias.to(wpn_in.dtype)))
        out = F.linear(hidden, self.class_weight().to(wpn_in.dtype), last.bias.to(wpn_in.dtype))
        if self.flat_field:
            ref = self.reference_activation(wpn_in[..., 0])  # [..., hidden]
            dc = torch.einsum("com,...m->...co", self.dc_weight().to(wpn_in.dtype), ref)
            k2 = self.kernel_size * self.kernel_size
            out = out + dc.unsqueeze(-2).expand(*dc.shape[:-2], self.in_channels, k2, self.out_channels).reshape(
                out.shape
            )
        return out

    def hidden_terms(
        self, scale: Scale, h: int, w: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Row/column index arrays and the separable parts of the WPN's hidden pre-activation.

        Returns ``(row_index [H], col_index [W], row_term [hidden, H], col_term [hidden, W])``
        with ``h(i, j) = row_term[:, i] + col_term[:, j]``.
        """
        rows, cols = axis_mapping(h, scale.value), axis_mapping(w, scale.value)
        first = self.wpn[0]
        w1 = first.weight.to(dtype)  # [hidden, 3]
        inv = torch.tensor(scale.inv, dtype=torch.float32, device=device).to(dtype)
        row_off = torch.from_numpy(rows.offset).to(device=device, dtype=dtype)
        col_off = torch.from_numpy(cols.offset).to(device=device, dtype=dtype)
        row_term = (w1[:, 0] * inv + first.bias.to(dtype))[:, None] + w1[:, 1:2] * row_off[None, :]
        col_term = w1[:, 2:3] * col_off[None, :]
        row_idx = torch.from_numpy(rows.index).to(device)
        col_idx = torch.from_numpy(cols.index).to(device)
        return row_idx, col_idx, row_term, col_term

    def forward(self, features: Tensor, scale: ScaleLike) -> Tensor:
        s = Scale.parse(scale)
        n, c, h, w = features.shape
        if c != self.in_channels:
            raise ValueError(f"expected {self.in_channels} feature channels, got {c}")
        pad = self.kernel_size // 2
        wz, wb = self.conv_weights()
        wb = self.scale_bias_weight(wb, s, features.device, features.dtype)
        z = F.conv2d(features, wz, padding=pad)  # [N, Cout*hidden, h, w]
        b = F.conv2d(features, wb, padding=pad)  # [N, Cout, h, w]
        row_idx, col_idx, row_term, col_term = self.hidden_terms(s, h, w, features.device, features.dtype)
        big_h, big_w = row_idx.numel(), col_idx.numel()
        z_cols = z.index_select(3, col_idx).view(n, self.out_channels, self.hidden, h, big_w)
        b_cols = b.index_select(3, col_idx)
        if torch.is_grad_enabled() and features.requires_grad or big_h == 0:
            rows_per_chunk = max(big_h, 1)
        else:
            per_row = n * self.out_channels * self.hidden * max(big_w, 1)
            rows_per_chunk = max(1, self.chunk_elements // per_row)
        out = []
        for r0 in range(0, big_h, rows_per_chunk) if big_h else [0]:
            ri = row_idx[r0 : r0 + rows_per_chunk]
            act = torch.relu(row_term[:, r0 : r0 + rows_per_chunk, None] + col_term[:, None, :])  # [hidden, rows, W]
            zg = z_cols.index_select(3, ri)  # [N, Cout, hidden, rows, W]
            out.append((zg * act).sum(dim=2) + b_cols.index_select(2, ri))
        return torch.cat(out, dim=2)


class MetaSRGAN(_Normalized):
    """Meta-SRGAN generator: the SRGAN trunk with a Meta-Upscale module (any scale)."""

    def __init__(
        self,
        features: int = 64,
        num_blocks: int = 5,
        wpn_hidden: int = 256,
        mean: float = NORM_MEAN,
        std: float = NORM_STD,
        scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
        flat_field: bool = True,
        noise_input: bool = False,
    ) -> None:
        super().__init__(mean, std)
        self.features = features
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        #: Noise-conditioned: the input is [N, 2, h, w], the image and its noise map (:func:`noise_map`).
        self.noise_input = bool(noise_input)
        self.trunk = SRResNetTrunk(2 if noise_input else 1, features, num_blocks)
        self.upscale = MetaUpscale(features, 1, wpn_hidden, flat_field=flat_field)

    def extract_features(self, lr: Tensor) -> Tensor:
        """The fixed feature extractor (normalisation included): [N,1,h,w] -> [N,C,h,w]
        ([N,2,h,w], image and noise map, for a noise-conditioned model)."""
        _check_input(lr, 2 if self.noise_input else 1)
        if self.noise_input:
            return self.trunk(torch.cat([self.normalize(lr[:, :1]), lr[:, 1:]], dim=1))
        return self.trunk(self.normalize(lr))

    def forward(self, lr: Tensor, scale: ScaleLike) -> Tensor:
        return self.denormalize(self.upscale(self.extract_features(lr), scale))


class _FixedScale(_Normalized):
    """Base of the fixed-scale baselines: refuses any other scale."""

    def __init__(self, upscale_factor: int, mean: float, std: float) -> None:
        super().__init__(mean, std)
        self.upscale_factor = int(upscale_factor)

    def _check_scale(self, scale: ScaleLike) -> None:
        s = Scale.parse(scale)
        if s.value != self.upscale_factor:
            raise ValueError(f"{type(self).__name__} supports only scale {self.upscale_factor}, got {s}")


def _upsampler(features: int, factor: int, act: Callable[[], nn.Module] | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    f = factor
    while f > 1:
        step = 3 if f % 3 == 0 else 2
        if f % step:
            raise ValueError(f"upscale factor must be a product of 2s and 3s, got {factor}")
        layers += [nn.Conv2d(features, features * step * step, 3, padding=1), nn.PixelShuffle(step)]
        if act is not None:
            layers.append(act())
        f //= step
    return nn.Sequential(*layers)


class SRGAN(_FixedScale):
    """SRGAN generator (Ledig et al.): the same trunk, PixelShuffle upsampling, 9x9 output conv."""

    def __init__(
        self,
        upscale_factor: int = 2,
        features: int = 64,
        num_blocks: int = 5,
        mean: float = NORM_MEAN,
        std: float = NORM_STD,
    ) -> None:
        super().__init__(upscale_factor, mean, std)
        self.trunk = SRResNetTrunk(1, features, num_blocks)
        self.upsample = _upsampler(features, upscale_factor, nn.PReLU)
        self.out = nn.Conv2d(features, 1, 9, padding=4)

    def forward(self, lr: Tensor, scale: ScaleLike = 2) -> Tensor:
        _check_input(lr)
        self._check_scale(scale)
        return self.denormalize(self.out(self.upsample(self.trunk(self.normalize(lr)))))


class _EDSRBlock(nn.Module):
    def __init__(self, features: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1), nn.ReLU(), nn.Conv2d(features, features, 3, padding=1)
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(_FixedScale):
    """EDSR (Lim et al. 2017), no BN, residual scaling, PixelShuffle upsampling."""

    def __init__(
        self,
        upscale_factor: int = 2,
        features: int = 256,
        num_blocks: int = 32,
        res_scale: float = 0.1,
        mean: float = NORM_MEAN,
        std: float = NORM_STD,
    ) -> None:
        super().__init__(upscale_factor, mean, std)
        self.head = nn.Conv2d(1, features, 3, padding=1)
        self.body = nn.Sequential(
            *[_EDSRBlock(features, res_scale) for _ in range(num_blocks)], nn.Conv2d(features, features, 3, padding=1)
        )
        self.tail = nn.Sequential(_upsampler(features, upscale_factor, None), nn.Conv2d(features, 1, 3, padding=1))

    def forward(self, lr: Tensor, scale: ScaleLike = 2) -> Tensor:
        _check_input(lr)
        self._check_scale(scale)
        x = self.head(self.normalize(lr))
        return self.denormalize(self.tail(x + self.body(x)))


class Bicubic(nn.Module):
    """Bicubic interpolation baseline (no parameters), same calling convention.

    Resamples at exactly ``r`` (HR pixel ``i`` centred on LR ``(i + 0.5) / r - 0.5``), the
    geometry of :func:`metasr.training.data.downscale_exact`; resizing to ``floor(h*r)`` pixels
    would use the size ratio instead and drift by up to one pixel across the image.
    """

    def forward(self, lr: Tensor, scale: ScaleLike) -> Tensor:
        _check_input(lr)
        s = Scale.parse(scale)
        big_h, big_w = s.output_size(lr.shape[-2], lr.shape[-1])
        # one replicated LR pixel at the far edges, so float rounding of (h + 1) * r never
        # leaves the output short of floor(h * r); then crop to the exact size
        padded = F.pad(lr, (0, 1, 0, 1), mode="replicate")
        factor = float(s.value)
        out = F.interpolate(
            padded, scale_factor=(factor, factor), mode="bicubic", align_corners=False, recompute_scale_factor=False
        )
        return out[..., :big_h, :big_w]


class Discriminator(nn.Module):
    """SRGAN discriminator: conv/LeakyReLU stacks with BN, global pooling, dense head.

    Returns logits [N]; the paper's sigmoid is applied inside the loss
    (``binary_cross_entropy_with_logits``), which is the numerically stable form.
    """

    def __init__(self, in_channels: int = 1, base: int = 64) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int, bn: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1)]
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
            return layers

        layers = block(in_channels, base, 1, bn=False) + block(base, base, 2)
        cin = base
        for mult in (2, 4, 8):
            layers += block(cin, base * mult, 1) + block(base * mult, base * mult, 2)
            cin = base * mult
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, base * 16, 1), nn.LeakyReLU(0.2), nn.Conv2d(base * 16, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).flatten()


def meta_srgan(**kwargs: Any) -> MetaSRGAN:
    """Meta-SRGAN as in the paper (64 features, 5 blocks, WPN hidden 256)."""
    return MetaSRGAN(**kwargs)


def meta_srgan_nc(**kwargs: Any) -> MetaSRGAN:
    """Meta-SRGAN conditioned on the noise level (input: the image and its noise map, :func:`noise_map`).

    Trained and evaluated here; not exportable yet (the export contract has one input image).
    """
    kwargs.setdefault("noise_input", True)
    return MetaSRGAN(**kwargs)


def srgan_x2(**kwargs: Any) -> SRGAN:
    """SRGAN x2 baseline of the paper."""
    kwargs.setdefault("upscale_factor", 2)
    return SRGAN(**kwargs)


def srgan_x3(**kwargs: Any) -> SRGAN:
    """SRGAN x3 (one PixelShuffle(3) stage): a fixed-scale reference for Meta-SRGAN at x3."""
    kwargs.setdefault("upscale_factor", 3)
    return SRGAN(**kwargs)


def srgan_x4(**kwargs: Any) -> SRGAN:
    """SRGAN x4 (two PixelShuffle(2) stages, as Ledig et al.): the reference for Meta-SRGAN at x4."""
    kwargs.setdefault("upscale_factor", 4)
    return SRGAN(**kwargs)


def edsr_x2(**kwargs: Any) -> EDSR:
    """EDSR x2 baseline of the paper (256 features, 32 blocks, residual scaling 0.1)."""
    kwargs.setdefault("upscale_factor", 2)
    return EDSR(**kwargs)


def edsr_baseline_x2(**kwargs: Any) -> EDSR:
    """EDSR's published small configuration, x2 (64 features, 16 blocks, no residual scaling; 1.37M).

    The size that trains on a CPU; the paper's comparison used :func:`edsr_x2` (40.7M).
    """
    for key, value in (("features", 64), ("num_blocks", 16), ("res_scale", 1.0), ("upscale_factor", 2)):
        kwargs.setdefault(key, value)
    return EDSR(**kwargs)


@dataclass(frozen=True)
class ArchSpec:
    """Everything the tools need to know about one architecture, in one place.

    Attributes:
        name: Name stored in checkpoints and accepted by every CLI.
        builder: Builds the generator from its constructor arguments.
        kind: ``"meta"`` (any scale), ``"fixed"`` (one integer scale) or ``"interp"`` (no weights).
        fixed_scale: The only scale of a ``"fixed"`` architecture, else None.
        trainable: ``metasr-train`` accepts it.
        exportable: ``metasr-export`` accepts it (its export ``kind`` is :attr:`kind`).
        noise_input: Its input is the image and its noise map (:func:`noise_map`).
    """

    name: str
    builder: Callable[..., nn.Module]
    kind: str
    fixed_scale: int | None = None
    trainable: bool = True
    exportable: bool = True
    noise_input: bool = False


#: The architectures, by the name stored in checkpoints: the one registry every check reads.
ARCH_SPECS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec("metasrgan", meta_srgan, "meta"),
        ArchSpec("metasrgan-nc", meta_srgan_nc, "meta", exportable=False, noise_input=True),
        ArchSpec("srgan", srgan_x2, "fixed", fixed_scale=2),
        ArchSpec("srgan-x3", srgan_x3, "fixed", fixed_scale=3),
        ArchSpec("srgan-x4", srgan_x4, "fixed", fixed_scale=4),
        ArchSpec("edsr", edsr_x2, "fixed", fixed_scale=2),
        ArchSpec("edsr-baseline", edsr_baseline_x2, "fixed", fixed_scale=2),
        ArchSpec("bicubic", lambda **kwargs: Bicubic(**kwargs), "interp", trainable=False, exportable=False),
    )
}
#: Architecture names accepted by :func:`build_model` and stored in checkpoints.
ARCHS: dict[str, Callable[..., nn.Module]] = {name: spec.builder for name, spec in ARCH_SPECS.items()}
#: Names ``metasr-train`` accepts.
TRAINABLE_ARCHS: tuple[str, ...] = tuple(n for n, s in ARCH_SPECS.items() if s.trainable)
#: Names ``metasr-export`` accepts.
EXPORTABLE_ARCHS: tuple[str, ...] = tuple(n for n, s in ARCH_SPECS.items() if s.exportable)


def arch_spec(arch: str) -> ArchSpec:
    """The :class:`ArchSpec` of ``arch``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return ARCH_SPECS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCH_SPECS)}") from None


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build a generator by architecture name (``metasrgan``, ``srgan``, ``edsr``, ``bicubic``).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    return arch_spec(arch).builder(**kwargs)
