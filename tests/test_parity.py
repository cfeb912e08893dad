"""Accuracy parity: ONNX Runtime (CPU) vs PyTorch, every trained scale, odd sizes, batches.

Exported once per module (a small random-init Meta-SRGAN with non-trivial batch norm). The
feature graph runs once per input and its features are reused for every scale; the class-kernel
upscale graphs (``kernels.onnx`` + each form) and the CPU's dense products are compared with
``model.upscale`` (PyTorch's identity form, which never forms a kernel) on the same features, so
each graph is checked on its own, and the chain end to end at a few scales.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metasr.core.scale import Scale, axis_mapping  # noqa: E402
from metasr.export import export_model  # noqa: E402
from metasr.export.verify import UpscaleSessions, ort_session, phantom, upscale_feeds  # noqa: E402
from metasr.runtime.kernels import FORMS, MAX_CLASSES, Kernels, apply_kernels, kernel_feeds  # noqa: E402
from metasr.training import build_model, load_checkpoint, model_config, save_checkpoint  # noqa: E402

TOL = 1e-4
SCALES = [f"{k / 10:.1f}" for k in range(11, 41)] + ["1.25", "1.75", "2.333", "3.7", "1.51"]
INPUTS = {  # (N, h, w): odd sizes, batch 1 and 3
    "random 3x37x50": ("random", (3, 37, 50)),
    "phantom 1x64x64": ("phantom", (1, 64, 64)),
    "random 2x13x19": ("random", (2, 13, 19)),
    "phantom 1x24x24": ("phantom", (1, 24, 24)),
}
EVERY_SCALE = ["random 2x13x19", "phantom 1x24x24"]  # tiny: both forms and the host path at 35 scales


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("parity")
    torch.manual_seed(0)
    model = build_model("metasrgan")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # BN must not be the identity
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
        model.upscale.wpn[2].weight.mul_(0.2)  # keep outputs mostly inside [0, 1]
    ckpt = save_checkpoint(folder / "best.pt", model, model_config("metasrgan", model, {}))
    out = export_model(ckpt, verify=False).out_dir
    model = load_checkpoint(ckpt)
    return model, ort_session(out / "feature_extractor.onnx", threads=1), UpscaleSessions.load(out, threads=1)


@pytest.fixture(scope="module")
def features(setup):
    """Per input: (lr, ORT features, PyTorch features)."""
    model, fe, _ = setup
    rng = np.random.default_rng(0)
    out = {}
    for name, (kind, (n, h, w)) in INPUTS.items():
        lr = rng.random((n, 1, h, w), dtype=np.float32) if kind == "random" else phantom(n, h, w, seed=1)
        with torch.no_grad():
            ref = model.extract_features(torch.from_numpy(lr))
        out[name] = (lr, fe.run(["features"], {"lr": lr})[0], ref)
    return out


def test_batch_norm_is_not_the_identity(setup) -> None:
    model = setup[0]
    bn = model.trunk.blocks[0].body[1]
    assert bn.running_var.min() < 0.9 and bn.running_mean.abs().max() > 0.05


@pytest.mark.parametrize("name", INPUTS)
def test_feature_graph_matches_pytorch(features, name: str) -> None:
    _, feats, ref = features[name]
    assert feats.shape == tuple(ref.shape) and feats.dtype == np.float32
    scale = max(1.0, float(ref.abs().max()))
    assert np.abs(feats - ref.numpy()).max() <= 1e-5 * scale


def _host_kernels(up: UpscaleSessions, s: Scale, mean: float) -> Kernels:
    classes = np.arange(s.p)
    return Kernels(up.kernels.run(["kernels"], kernel_feeds(s, classes, classes))[0], mean)


@pytest.mark.parametrize("name", EVERY_SCALE)
def test_upscale_graphs_match_pytorch_at_every_scale(setup, features, name: str) -> None:
    model, _, up = setup
    _, _, ref_feats = features[name]
    feats = ref_feats.numpy()
    errors = {}
    for scale in SCALES:
        s = Scale.parse(scale)
        with torch.no_grad():
            ref = model.denormalize(model.upscale(ref_feats, s)).numpy()
        for form in FORMS:
            sr = up.run(feats, s, form)
            assert sr.shape == ref.shape == (ref_feats.shape[0], 1, *s.output_size(*ref_feats.shape[-2:]))
            assert np.isfinite(sr).all()
            errors[f"{scale} {form}"] = float(np.abs(sr - ref).max())
        if s.p <= MAX_CLASSES:  # the CPU's dense products with the same kernels
            h, w = feats.shape[-2:]
            rows, cols = axis_mapping(h, s.value), axis_mapping(w, s.value)
            host = apply_kernels(
                _host_kernels(up, s, model.mean), feats, rows.index, rows.residue, cols.index, cols.residue
            )
            errors[f"{scale} host"] = float(np.abs(host - ref[:, 0]).max())
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"worst case {worst}: {errors[worst]:.3g}"
    assert len(errors) >= 2 * len(SCALES) + 30
    # the outputs are a meaningful test only if they are mostly image-like values
    assert 0.2 < float(np.mean((sr >= 0) & (sr <= 1))) <= 1.0


@pytest.mark.parametrize("scale", ["1.1", "2.333", "3.7", "1.51"])
def test_chain_matches_model_end_to_end(setup, features, scale: str) -> None:
    model, _, up = setup
    for lr, feats, _ in features.values():
        with torch.no_grad():
            ref = model(torch.from_numpy(lr), scale).numpy()
        assert np.abs(up.run(feats, scale) - ref).max() <= TOL


def test_hr_lengths_use_exact_arithmetic(setup, features) -> None:
    # 2.3 x 50 = 115 exactly (float arithmetic gives 114); the graphs follow the index arrays
    _, _, up = setup
    _, feats, _ = features["random 3x37x50"]
    for form in FORMS:
        assert up.run(feats, "2.3", form).shape[-2:] == (85, 115) == (37 * 23 // 10, 50 * 23 // 10)


@pytest.mark.parametrize("form", list(FORMS))
def test_upscale_graph_on_a_feature_slice_with_halo_gives_the_same_rows(setup, features, form: str) -> None:
    # the property tiling relies on: a 1-pixel feature halo suffices for the upscale graphs
    _, _, up = setup
    _, feats, _ = features["phantom 1x64x64"]
    s = Scale.parse(Fraction(7, 3))
    full = up.run(feats, s, form)
    rows = axis_mapping(64, s.value, 40, 90)
    lo, hi = int(rows.index.min()) - 1, int(rows.index.max()) + 2
    feeds = upscale_feeds(up.kernels, feats, s)
    feeds.update(
        features=np.ascontiguousarray(feats[:, :, lo:hi]), row_index=rows.index - lo, row_kernel=rows.residue * s.p
    )
    tile = up.forms[form].run(["sr"], feeds)[0]
    np.testing.assert_allclose(tile, full[:, :, 40:90], rtol=0, atol=1e-6)


def test_scale_dependence_is_real(setup, features) -> None:
    # sanity: the same HR geometry with the kernels of another 1/r gives a different image
    _, _, up = setup
    _, feats, _ = features["phantom 1x64x64"]
    a = upscale_feeds(up.kernels, feats, "2")
    other = kernel_feeds(Scale.parse("2"), np.arange(2), np.arange(2))
    other["inv_scale"] = np.array([1 / 3], np.float32)
    b = dict(a, kernels=up.kernels.run(["kernels"], other)[0])
    assert np.abs(up.forms["classes"].run(["sr"], a)[0] - up.forms["classes"].run(["sr"], b)[0]).max() > 1e-3
