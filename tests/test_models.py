"""The networks of the paper: sizes, shapes, the Meta-Upscale math, gradients, checkpoints, losses."""

from __future__ import annotations

import math
import os
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from metasr.core.errors import CheckpointError
from metasr.core.scale import Scale, axis_mapping
from metasr.training import build_model, load_checkpoint, model_config, read_checkpoint, save_checkpoint
from metasr.training.losses import (
    GeneratorLoss,
    LossWeights,
    VGGPerceptualLoss,
    discriminator_loss,
    generator_adversarial_loss,
    vgg19_features,
)
from metasr.training.models import Discriminator, MetaUpscale, arch_spec

SCALES = ["1.1", "1.5", "1.8", "2.0", "2.3", "2.7", "3.7", "4.0"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("arch", "paper"), [("metasrgan", 0.561e6), ("srgan", 0.565e6), ("edsr", 40.7e6)])
def test_parameter_counts_match_paper(arch, paper):
    count = n_params(build_model(arch))
    assert abs(count - paper) / paper < 0.01, f"{arch}: {count} parameters vs paper {paper}"


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'.*metasrgan"):
        build_model("resnet")


@pytest.fixture(scope="module")
def metasrgan():
    torch.manual_seed(0)
    return build_model("metasrgan").eval()


@pytest.mark.parametrize("scale", SCALES)
def test_output_shapes_on_odd_sizes(metasrgan, scale):
    lr = torch.rand(2, 1, 50, 37)
    with torch.no_grad():
        sr = metasrgan(lr, scale)
    r = Fraction(scale)
    assert sr.shape == (2, 1, math.floor(50 * r), math.floor(37 * r))
    assert torch.isfinite(sr).all()


def test_scale_as_float_and_string_agree(metasrgan):
    lr = torch.rand(1, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(metasrgan(lr, 2.3), metasrgan(lr, "2.3"))
    assert metasrgan(lr, 2.3).shape[-1] == 46


def _reference_meta_upscale(module: MetaUpscale, feat: torch.Tensor, scale: str) -> torch.Tensor:
    """The original formulation: a predicted kernel per HR pixel applied to unfold(F)."""
    s = Scale.parse(scale)
    n, c, h, w = feat.shape
    rows, cols = axis_mapping(h, s.value), axis_mapping(w, s.value)
    big_h, big_w = len(rows.index), len(cols.index)
    wpn_in = torch.stack(
        [
            torch.full((big_h, big_w), s.inv),
            torch.from_numpy(rows.offset)[:, None].expand(big_h, big_w),
            torch.from_numpy(cols.offset)[None, :].expand(big_h, big_w),
        ],
        -1,
    ).double()
    weights = module.double().predict_kernels(wpn_in).view(big_h, big_w, c * 9, module.out_channels)
    module.float()
    unfolded = F.unfold(feat.double(), 3, padding=1).view(n, c * 9, h, w)
    gathered = unfolded[:, :, torch.from_numpy(rows.index)][:, :, :, torch.from_numpy(cols.index)]
    return torch.einsum("nkhw,hwko->nohw", gathered, weights)


@pytest.mark.parametrize("flat_field", [True, False])
@pytest.mark.parametrize("scale", SCALES + ["1.25", "2.333"])
def test_meta_upscale_equals_per_pixel_kernels(scale, flat_field):
    torch.manual_seed(1)
    module = MetaUpscale(in_channels=6, out_channels=2, hidden=16, flat_field=flat_field)
    feat = torch.randn(2, 6, 13, 11)
    with torch.no_grad():
        ours = module(feat, scale)
        ref = _reference_meta_upscale(module, feat, scale)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_centre_tap_wpn_is_nearest_neighbour(scale):
    module = MetaUpscale(in_channels=5, out_channels=1, hidden=8)
    with torch.no_grad():
        module.wpn[2].weight.zero_()
        module.wpn[2].bias.zero_()
        channel = 3
        module.wpn[2].bias[(channel * 9 + 1 * 3 + 1) * 1 + 0] = 1.0  # centre tap of one channel
    feat = torch.randn(1, 5, 17, 9)
    with torch.no_grad():
        sr = module(feat, scale)
    s = Scale.parse(scale)
    rows, cols = axis_mapping(17, s.value), axis_mapping(9, s.value)
    nearest = feat[0, channel][torch.from_numpy(rows.index)][:, torch.from_numpy(cols.index)]
    assert torch.equal(sr[0, 0], nearest)


def test_inference_chunking_is_exact():
    torch.manual_seed(2)
    module = MetaUpscale(in_channels=4, out_channels=1, hidden=8).eval()
    feat = torch.randn(2, 4, 21, 19)
    with torch.no_grad():
        whole = module(feat, "3.7")
        module.chunk_elements = 2 * 8 * 70 * 3  # a few HR rows per chunk
        chunked = module(feat, "3.7")
    # same arithmetic per pixel; only the vectorised reduction order may differ
    torch.testing.assert_close(whole, chunked, atol=1e-6, rtol=1e-6)


def test_gradients_reach_every_parameter(metasrgan):
    model = build_model("metasrgan").train()
    lr = torch.rand(2, 1, 12, 12)
    hr = torch.rand(2, 1, 27, 27)
    F.l1_loss(model(lr, "2.3"), hr).backward()
    missing = [
        name
        for name, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("arch", "factor"), [("srgan", 2), ("srgan-x3", 3), ("srgan-x4", 4), ("edsr", 2), ("edsr-baseline", 2)]
)
def test_fixed_scale_baselines(arch, factor):
    small = {"features": 16, "num_blocks": 2} if arch.startswith("edsr") else {}
    model = build_model(arch, **small).eval()
    assert arch_spec(arch).fixed_scale == model.upscale_factor == factor
    lr = torch.rand(1, 1, 9, 7)
    with torch.no_grad():
        assert model(lr, factor).shape == (1, 1, 9 * factor, 7 * factor)
    with pytest.raises(ValueError, match=f"supports only scale {factor}"):
        model(lr, "1.8")


def test_edsr_baseline_is_edsrs_published_small_configuration():
    """EDSR's baseline: 16 residual blocks of 64 features, no residual scaling; 1.37M parameters (x2, grey)."""
    model = build_model("edsr-baseline")
    assert len(model.body) == 17 and model.head.out_channels == 64  # 16 blocks + the closing conv
    assert all(block.res_scale == 1.0 for block in list(model.body)[:16])
    assert abs(n_params(model) - 1.37e6) / 1.37e6 < 0.01


def test_bicubic_baseline_shape_and_constant_image():
    model = build_model("bicubic")
    lr = torch.full((1, 1, 10, 13), 0.25)
    out = model(lr, "2.7")
    assert out.shape == (1, 1, 27, 35)
    torch.testing.assert_close(out, torch.full_like(out, 0.25))


def test_discriminator_logits():
    disc = Discriminator(base=8)
    logits = disc(torch.rand(3, 1, 40, 40))
    assert logits.shape == (3,)
    loss = discriminator_loss(logits, -logits)
    assert torch.isfinite(loss)
    # the log-likelihood form stays finite where a plain sigmoid + log would not
    assert torch.isfinite(generator_adversarial_loss(torch.tensor([-200.0])))
    assert generator_adversarial_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0)


def test_checkpoint_round_trip(tmp_path, metasrgan):
    path = save_checkpoint(
        tmp_path / "run" / "best.pt",
        metasrgan,
        model_config("metasrgan", metasrgan, {}),
        step=7,
        metrics={"psnr": 30.5},
    )
    ckpt = read_checkpoint(path)
    assert ckpt["step"] == 7 and ckpt["metrics"]["psnr"] == 30.5
    assert ckpt["config"]["normalization"] == {"mean": 0.37, "std": 0.117}
    assert ckpt["config"]["scale_range"] == [1.1, 4.0]
    loaded = load_checkpoint(path)
    assert not loaded.training
    lr = torch.rand(1, 1, 15, 16)
    with torch.no_grad():
        assert torch.equal(loaded(lr, "1.8"), metasrgan(lr, "1.8"))
    assert list((tmp_path / "run").iterdir()) == [path]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the user's umask, not mkstemp's 0600


def test_average_of_checkpoints(tmp_path):
    """Weight averaging: float tensors are the mean, counters the last one's, the result loads."""
    from metasr.training.checkpoint import average_checkpoints

    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = build_model("metasrgan", flat_field=True)
        paths.append(
            save_checkpoint(tmp_path / f"s{seed}.pt", model, model_config("metasrgan", model, {}), step=100 * seed)
        )
    ckpts = [read_checkpoint(p) for p in paths]
    avg = average_checkpoints(paths)
    key = "trunk.head.0.weight"
    assert torch.allclose(avg["model"][key], sum(c["model"][key] for c in ckpts) / 3, atol=1e-7)
    assert not torch.equal(avg["model"][key], ckpts[-1]["model"][key])
    counters = [k for k, v in avg["model"].items() if not v.is_floating_point()]
    assert counters and all(torch.equal(avg["model"][k], ckpts[-1]["model"][k]) for k in counters)
    assert avg["step"] == 200 and avg["training"]["averaged"] == [0, 100, 200]
    out = tmp_path / "avg.pt"
    torch.save(avg, out)
    model = load_checkpoint(out)  # a valid, shippable checkpoint
    assert model.upscale.flat_field
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(1, 1, 12, 12), "2")).all()


def test_average_refuses_checkpoints_of_different_runs(tmp_path, metasrgan):
    from metasr.training.checkpoint import average_checkpoints

    a = save_checkpoint(tmp_path / "a.pt", metasrgan, model_config("metasrgan", metasrgan, {}))
    other = build_model("metasrgan", features=32)
    b = save_checkpoint(tmp_path / "b.pt", other, model_config("metasrgan", other, {"features": 32}))
    with pytest.raises(CheckpointError, match="only checkpoints of one run"):
        average_checkpoints([a, b])
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints([a])


def _two_runs(tmp_path):
    """A model and a continuation of it (different weights, the same config), as shippable files."""
    paths = []
    for seed, step in ((0, 500), (1, 2000)):
        torch.manual_seed(seed)
        model = build_model("metasrgan", flat_field=True)
        paths.append(
            save_checkpoint(
                tmp_path / f"r{seed}.pt",
                model,
                model_config("metasrgan", model, {}),
                step=step,
                training={"stage": "l1", "init": f"start-{seed}"},
            )
        )
    return paths


def test_weighted_average_interpolates(tmp_path):
    """--weights: the exact weighted mean, the sources and weights recorded, the result loads."""
    from metasr.training.checkpoint import average_checkpoints

    a, b = _two_runs(tmp_path)
    ca, cb = read_checkpoint(a), read_checkpoint(b)
    mix = average_checkpoints([a, b], [0.7, 0.3])
    for key, value in mix["model"].items():
        if value.is_floating_point():
            want = (0.7 * ca["model"][key].double() + 0.3 * cb["model"][key].double()).float()
            assert torch.allclose(value, want, atol=1e-7), key
    key = "trunk.head.0.weight"
    assert not torch.allclose(mix["model"][key], average_checkpoints([a, b])["model"][key])
    assert mix["training"]["weights"] == [0.7, 0.3] and mix["training"]["averaged"] == [500, 2000]
    sources = mix["training"]["sources"]
    assert [s["file"] for s in sources] == ["r0.pt", "r1.pt"] and [s["step"] for s in sources] == [500, 2000]
    assert [s["training"]["init"] for s in sources] == ["start-0", "start-1"]
    # the end points are the inputs themselves
    key = "upscale.wpn.2.weight"
    assert torch.equal(average_checkpoints([a, b], [1.0, 0.0])["model"][key], ca["model"][key])
    out = tmp_path / "mix.pt"
    torch.save(mix, out)
    with torch.no_grad():
        assert torch.isfinite(load_checkpoint(out)(torch.rand(1, 1, 12, 12), "2.5")).all()


@pytest.mark.parametrize(
    "weights, match",
    [
        ([1.0], "1 weights for 2 checkpoints"),
        ([0.5, 0.3], "sum to 0.8"),
        ([1.5, -0.5], "must be finite numbers >= 0"),
        ([float("nan"), 1.0], "must be finite numbers >= 0"),
        ([True, False], "must be finite numbers >= 0"),
    ],
)
def test_weighted_average_refuses_bad_weights(tmp_path, weights, match):
    from metasr.training.checkpoint import average_checkpoints

    a, b = _two_runs(tmp_path)
    with pytest.raises(CheckpointError, match=match):
        average_checkpoints([a, b], weights)


def test_average_script(tmp_path):
    """scripts/average_checkpoints.py: --weights writes the mix; bad weights or an existing OUT: one line, exit 2."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "average_checkpoints.py"
    a, b = _two_runs(tmp_path)
    run = lambda *args: subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True)
    out = tmp_path / "mix.pt"
    for bad in ("0.5,0.6", "0.5,x", ""):
        r = run(out, a, b, "--weights", bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert set(tmp_path.iterdir()) == {a, b}  # nothing written
    r = run(out, a, b, "--weights", "0.8,0.2")
    assert r.returncode == 0, r.stderr
    assert "weights [0.8, 0.2]" in r.stdout and read_checkpoint(out)["training"]["weights"] == [0.8, 0.2]
    r = run(out, a, b)
    assert r.returncode == 2 and "exists" in r.stderr


class _RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {"arch": "metasrgan"}, "payload": _RunsCode()}, path)
    capsys.readouterr()
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_bad_checkpoint_files(tmp_path, content):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_truncated_and_foreign_checkpoints(tmp_path, metasrgan):
    good = save_checkpoint(tmp_path / "good.pt", metasrgan, model_config("metasrgan", metasrgan, {}))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a metasr checkpoint"):
        load_checkpoint(foreign)
    mismatch = tmp_path / "mismatch.pt"
    save_checkpoint(mismatch, metasrgan, {"arch": "srgan", "args": {}})
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(mismatch)


@pytest.mark.parametrize(
    "key, value, message",
    [
        (("config", "arch"), ["metasrgan"], "architecture ['metasrgan'] is unknown"),
        (("config", "arch"), "resnet", "architecture 'resnet' is unknown"),
        (("step",), "12", "step is '12'"),
        (("step",), -1, "step is -1"),
        (("config", "args"), [64], "config 'args' is a list"),
        (("config", "args", "features"), 10**9, "features is 1000000000; expected a whole number from 1 to 1024"),
        (("config", "args", "num_blocks"), 2.5, "num_blocks is 2.5"),
        (("config", "args", "wpn_hidden"), True, "wpn_hidden is True"),
        (("config", "args", "std"), float("nan"), "std is nan"),
        (("config", "args", "scale_range"), [4.0, 1.1], "args.scale_range is [4.0, 1.1]"),
        (("config", "scale_range"), [1.1, float("inf")], "scale_range is [1.1, inf]"),
        (("config", "scale_range"), "1.1-4", "scale_range is '1.1-4'"),
        (("config", "normalization"), {"mean": "0.37", "std": 0.1}, "normalization"),
        (("config", "args", "act_layer"), "os.system", "unknown model argument 'act_layer'"),
        (("model",), [1, 2], "not a dict of named tensors"),
    ],
)
def test_checkpoint_config_is_validated_before_anything_is_built(tmp_path, metasrgan, key, value, message):
    path = save_checkpoint(tmp_path / "c.pt", metasrgan, model_config("metasrgan", metasrgan, {}))
    ckpt = torch.load(path, weights_only=True)
    target = ckpt
    for k in key[:-1]:
        target = target[k]
    target[key[-1]] = value
    torch.save(ckpt, path)
    for reader in (read_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            reader(path)
        assert message in str(info.value) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    """A randomly initialised VGG19 saved in torchvision's state-dict format (features + classifier)."""
    torch.manual_seed(3)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    state.update({"classifier.0.weight": torch.zeros(4096, 25088), "classifier.0.bias": torch.zeros(4096)})
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path


def test_perceptual_loss_from_saved_vgg19(vgg_weights):
    loss = VGGPerceptualLoss(vgg_weights)
    assert loss.features[34].weight.shape == (512, 512, 3, 3)  # conv5_4
    assert isinstance(loss.features[-1], torch.nn.ReLU) and len(loss.features) == 36
    hr = torch.rand(2, 1, 32, 32)
    sr = (hr + 0.1 * torch.randn_like(hr)).requires_grad_()
    value = loss(sr, hr)
    assert value.item() > 0 and loss(hr, hr).item() == 0
    value.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all()
    assert all(not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training


def test_perceptual_loss_rejects_wrong_files(tmp_path):
    with pytest.raises(CheckpointError, match="do not exist"):
        VGGPerceptualLoss(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(CheckpointError, match="missing"):
        VGGPerceptualLoss(wrong)


def test_generator_loss_combination(vgg_weights):
    hr = torch.rand(2, 1, 32, 32)
    sr = hr.flip(-1)
    fake_logits = torch.tensor([0.3, -0.2])
    per = VGGPerceptualLoss(vgg_weights)
    total, terms = GeneratorLoss(LossWeights(), per)(sr, hr, fake_logits)
    expected = terms["l1"] + 1e-3 * terms["adversarial"] + 6e-3 * terms["perceptual"]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    only_l1, terms_l1 = GeneratorLoss(LossWeights(adversarial=0, perceptual=0), per)(sr, hr, fake_logits)
    assert set(terms_l1) == {"l1"} and only_l1.item() == pytest.approx(terms["l1"])


def test_generator_loss_mse_pixel_term():
    """--pixel-loss mse: the pixel term is the mean squared error, logged as "mse"; L1 stays the default."""
    hr = torch.zeros(1, 1, 4, 4)
    sr = torch.zeros(1, 1, 4, 4)
    sr[0, 0, 0, :2] = torch.tensor([0.5, -0.25])  # L1 = 0.75/16, MSE = 0.3125/16: they differ
    total, terms = GeneratorLoss(LossWeights(pixel="mse"))(sr, hr)
    assert set(terms) == {"mse"} and total.item() == pytest.approx(0.3125 / 16)
    assert GeneratorLoss()(sr, hr)[0].item() == pytest.approx(0.75 / 16)
    weighted, _ = GeneratorLoss(LossWeights(l1=2.0, pixel="mse"))(sr, hr)
    assert weighted.item() == pytest.approx(2 * 0.3125 / 16)
    with pytest.raises(ValueError, match="unknown pixel loss 'huber'"):
        GeneratorLoss(LossWeights(pixel="huber"))(sr, hr)


def test_psnr_pixel_loss_is_minus_the_mean_patch_psnr_and_weighs_patches_alike():
    """--pixel-loss psnr: minus the mean PSNR of the patches; a clean patch (small error) pulls as
    hard as a noisy one, where MSE lets the large error dominate (the gradients' ratio is inverted)."""
    hr = torch.zeros(2, 1, 8, 8)
    sr = hr.clone()
    sr[0] += 0.1  # 20 dB
    sr[1] += 0.01  # 40 dB
    sr.requires_grad_(True)
    total, terms = GeneratorLoss(LossWeights(pixel="psnr"))(sr, hr)
    assert set(terms) == {"psnr"} and total.item() == pytest.approx(-30.0, abs=1e-3)
    total.backward()
    g = sr.grad.flatten(1).norm(dim=1)
    assert float(g[1] / g[0]) == pytest.approx(10.0, rel=1e-3)  # the patch with 1/10 the error
    sr.grad = None
    GeneratorLoss(LossWeights(pixel="mse"))(sr, hr)[0].backward()
    g = sr.grad.flatten(1).norm(dim=1)
    assert float(g[1] / g[0]) == pytest.approx(0.1, rel=1e-3)
    exact = GeneratorLoss(LossWeights(pixel="psnr"))(hr, hr)[0]  # an exact patch: the 80 dB floor
    assert math.isfinite(exact.item()) and exact.item() == pytest.approx(-80.0, abs=1e-3)


# --------------------------------------------------------------------------------------------
# Flat-field constraint: every kernel class has the same DC gain


def _flat_deviation(model: torch.nn.Module, scale: str, size: int = 64) -> float:
    """Max deviation from the median of the output of a constant image, away from the borders."""
    s = Scale.parse(scale)
    with torch.no_grad():
        out = model(torch.full((1, 1, size, size), 0.5), scale)[0, 0]
    margin = 20  # LR pixels: beyond the trunk's receptive radius (16) and the 3x3 upscale tap
    lo, hi = math.ceil(margin * s.value) + 1, math.floor((size - margin) * s.value) - 1
    centre = out[lo:hi, lo:hi]
    return float((centre - centre.median()).abs().max())


@pytest.mark.parametrize("scale", SCALES + ["2.333", "3.9", "1.51"])
def test_flat_field_constant_in_constant_out(scale):
    torch.manual_seed(3)
    model = build_model("metasrgan", features=16, num_blocks=2, wpn_hidden=32).eval()
    with torch.no_grad():  # a WPN far from any trained state: the constraint must not depend on training
        model.upscale.wpn[2].weight.normal_(0, 0.5)
    assert _flat_deviation(model, scale) < 1e-5
    legacy = build_model("metasrgan", features=16, num_blocks=2, wpn_hidden=32, flat_field=False).eval()
    legacy.load_state_dict(model.state_dict())
    if Scale.parse(scale).value.numerator > 1:  # the unconstrained WPN shows the period-p pattern
        assert _flat_deviation(legacy, scale) > 1e-3


def test_flat_field_kernels_share_their_dc_gain():
    torch.manual_seed(4)
    module = MetaUpscale(in_channels=5, out_channels=1, hidden=12)
    offsets = torch.tensor([0.0, 0.25, 0.5, 0.75])
    wpn_in = torch.tensor([[0.25, a, b] for a in offsets for b in offsets])
    with torch.no_grad():
        kernels = module.predict_kernels(wpn_in).view(16, 5, 9)
    dc = kernels.sum(dim=2)  # [classes, channels]
    torch.testing.assert_close(dc, dc[:1].expand_as(dc), atol=1e-6, rtol=0)
    assert float(kernels.std(dim=0).max()) > 1e-3  # the classes still differ in their shape


def test_checkpoints_before_the_flat_field_load_unconstrained(tmp_path):
    args = {"features": 8, "num_blocks": 1, "wpn_hidden": 8}
    model = build_model("metasrgan", **args)
    config = model_config("metasrgan", model, args)
    assert config["args"]["flat_field"] is True  # recorded by every new checkpoint
    new = save_checkpoint(tmp_path / "new.pt", model, config)
    del config["args"]["flat_field"]  # as written before the constraint existed
    old = save_checkpoint(tmp_path / "old.pt", model, config)
    assert load_checkpoint(old).upscale.flat_field is False
    assert load_checkpoint(new).upscale.flat_field is True
    config["args"]["flat_field"] = 1
    bad = save_checkpoint(tmp_path / "bad.pt", model, config)
    with pytest.raises(CheckpointError, match="flat_field is 1; expected true or false"):
        read_checkpoint(bad)
