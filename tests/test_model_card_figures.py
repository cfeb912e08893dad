"""The model cards' held-out real-scan figures are the figures of the per-image scores shipped beside them.

Each card's tables (gain over bicubic: the mean of files with its 95% interval and each MR file;
one number per scale for the CT and NM image) are recomputed by ``scripts/summarise_eval.py`` from
``eval/real/<report>/per_image.csv``, so a card cannot drift from its data, and a new model can be
gated against the shipped one without evaluating the shipped one again
(``summarise_eval.py new=NEW default=models/metasrgan-mri/eval/real --against default``).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MR_FILES = ["MR-SIEMENS-DICOM-WithOverlays.dcm", "MR2_UNCR.dcm", "example4d_vol0.nii.gz"]
NUMBER = r"[+-]\d+\.\d\d"
NATIVE_SECTION = "## Against references at the acquired resolution"
SHIPPED = ["metasrgan-mri", "metasrgan-mri-robust", "metasrgan-mri-gan", "metasrgan-mri-denoise"]


def _summarise():
    spec = importlib.util.spec_from_file_location("summarise_eval", ROOT / "scripts" / "summarise_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mr_report(label: str) -> str:
    """The report a row label of the cards' MR table names."""
    kspace, noise = "k-space" in label, "Rician" in label
    if "bicubic" in label:
        return "mr-bicubic"
    return f"mr-{'kspace' if kspace else 'gauss'}{'-rician2' if noise else ''}"


def _other_report(label: str) -> str:
    modality = "ct" if label.startswith("head CT") else "nm"
    return f"{modality}-gauss{'-gaussian2' if 'noise' in label else ''}"


def _figures(model: str, folder: str = "real"):
    """Per report and scale: (mean, interval, the MR files' gains) from the shipped per-image scores."""
    module = _summarise()
    out = {}
    for csv_path in sorted((ROOT / "models" / model / "eval" / folder).glob("*/per_image.csv")):
        for (scale, name), cell in module.cell_figures([("", csv_path)]).items():
            if name in ("metasrgan", "metasrgan x8", model):  # a report may hold another model beside this one
                files = [cell.files[f] for f in MR_FILES] if len(cell.files) == 3 else []
                out[(csv_path.parent.name, scale)] = (cell.mean, cell.ci, files)
    return out


def _fmt(x: float) -> str:
    return f"{x:+.2f}"


@pytest.mark.parametrize(
    "model, reports, least",
    [
        ("metasrgan-mri", 14, 36),  # five MR protocols (and their native twins), CT and NM with and without noise
        ("metasrgan-mri-robust", 14, 33),
        ("metasrgan-mri-gan", 8, 12),  # MR: the PSF with and without noise, clean bicubic
        ("metasrgan-mri-denoise", 14, 36),
    ],
)
def test_card_figures_are_the_shipped_scores(model: str, reports: int, least: int) -> None:
    figures = _figures(model)
    assert len({report for report, _ in figures}) == reports
    # the single-run tables (the self-ensemble's section has its own test)
    text = (ROOT / "models" / model / "MODEL_CARD.md").read_text()
    card = text.split("## With the self-ensemble")[0].split(NATIVE_SECTION)[0]
    checked, label = 0, ""
    head = r"^\| (.*?) \| x([\d.]+) \| "
    row = re.compile(rf"{head}(?:\*\*)?({NUMBER})(?:\*\*)? ± (\d+\.\d\d) \| ({NUMBER}) / ({NUMBER}) / ({NUMBER}) \|")
    for line in card.splitlines():
        m = row.match(line)
        if not m:
            continue
        label = m.group(1) or label  # a continuation row leaves the label empty
        mean, ci, files = figures[(_mr_report(label), m.group(2))]
        assert m.group(3) == _fmt(mean) and m.group(4) == f"{ci:.2f}", (line, mean, ci)
        assert [m.group(i) for i in (5, 6, 7)] == [_fmt(g) for g in files], line
        checked += 1
    other = re.compile(r"^\| ((?:head CT|NM), [^|]*) \|((?: [^|]* \|){4})$")
    scales = ["1.5", "2", "3", "4"]
    for line in card.splitlines():
        m = other.match(line)
        if not m:
            continue
        cells = [c.strip() for c in m.group(2).strip(" |").split("|")]
        for scale, cell in zip(scales, cells):
            first = re.search(NUMBER, cell).group(0)
            assert first == _fmt(figures[(_other_report(m.group(1)), scale)][0]), (line, scale)
            checked += 1
    assert checked >= least, f"{model}: only {checked} figures of the card were found to check"


@pytest.mark.parametrize("model", SHIPPED)
def test_card_native_figures_are_the_shipped_scores(model: str) -> None:
    """The cards' native-reference table (``eval/real/mr-native-*``, ``metasr-eval --reference native``):
    every MR protocol at every scale, the mean of files with its interval and each file's gain."""
    figures = _figures(model)
    card = (ROOT / "models" / model / "MODEL_CARD.md").read_text()
    section = card.split(NATIVE_SECTION, 1)[1].split("\n## ", 1)[0]
    row = re.compile(
        rf"^\| (.*?) \| x([\d.]+) \| \**({NUMBER})\** ± (\d+\.\d\d) \| ({NUMBER}) / ({NUMBER}) / ({NUMBER}) \|"
    )
    checked, label, seen = 0, "", set()
    for line in section.splitlines():
        m = row.match(line)
        if not m:
            continue
        label = m.group(1) or label
        report = "mr-native-" + _mr_report(label).removeprefix("mr-")
        mean, ci, files = figures[(report, m.group(2))]
        assert m.group(3) == _fmt(mean) and m.group(4) == f"{ci:.2f}", (line, mean, ci)
        assert [m.group(i) for i in (5, 6, 7)] == [_fmt(g) for g in files], line
        seen.add(report)
        checked += 1
    assert len(seen) == 5 and checked == 20, (model, seen, checked)


@pytest.mark.parametrize(
    "head, folder",
    [
        ("| LR made by (MR unless named) |", "real"),
        ("| LR made by (MR unless named), with `--ensemble` |", "real-ensemble"),
    ],
)
def test_readme_lead_tables_are_the_shipped_scores(head: str, folder: str) -> None:
    """The README's first table (default and robust at x2 and x4) and its self-ensemble twin are the same data."""
    figures = {m: _figures(m, folder) for m in ("metasrgan-mri", "metasrgan-mri-robust")}
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    checked = 0
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        label, *cells = [c.strip() for c in line.strip("|").split("|")]
        report = _other_report(label) if label.startswith(("head CT", "NM")) else _mr_report(label)
        for (model, scale), cell in zip([(m, s) for m in figures for s in ("2", "4")], cells):
            mean, ci, _ = figures[model][(report, scale)]
            number = re.search(NUMBER, cell).group(0)
            assert number == _fmt(mean), (line, model, scale)
            if "±" in cell:
                assert cell.endswith(f"± {ci:.2f}"), (line, model, scale)
            checked += 1
    assert checked == 6 * 4


@pytest.mark.parametrize("model", ["metasrgan-mri", "metasrgan-mri-robust", "metasrgan-mri-denoise"])
def test_card_ensemble_figures_are_the_shipped_scores(model: str) -> None:
    """The cards' self-ensemble table: its gain over bicubic and, in brackets, its gain over one run,
    from ``eval/real-ensemble`` and ``eval/real`` (the same LR: noise is seeded per image)."""
    single, ens = _figures(model), _figures(model, "real-ensemble")
    assert len({report for report, _ in ens}) == 9
    card = (ROOT / "models" / model / "MODEL_CARD.md").read_text()
    section = card.split("## With the self-ensemble", 1)[1].split("\n## ", 1)[0]
    scales = ["1.5", "2", "3", "4"]
    checked = 0
    for line in section.splitlines():
        m = re.match(r"^\| ([^|]+?) \|((?: [^|]* \|){4})$", line)
        if not m or not re.search(NUMBER, m.group(2)):
            continue
        label = m.group(1)
        report = _other_report(label) if label.startswith(("head CT", "NM")) else _mr_report(label)
        cells = [c.strip() for c in m.group(2).strip(" |").split("|")]
        for scale, cell in zip(scales, cells):
            gain, delta = re.fullmatch(rf"\**({NUMBER})\** \(({NUMBER})\)", cell).groups()
            mean = ens[(report, scale)][0]
            assert gain == _fmt(mean), (line, scale)
            assert delta == _fmt(mean - single[(report, scale)][0]), (line, scale)
            checked += 1
    assert checked == 9 * 4


def test_readme_native_table_is_the_shipped_scores() -> None:
    """The README's native-reference table: every shipped model, every MR protocol, x2 / x4."""
    figures = {m: _figures(m) for m in SHIPPED}
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| LR made by (MR, native references)"))
    checked = 0
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        label, *cells = [c.strip() for c in line.strip("|").split("|")]
        report = "mr-native-" + _mr_report(label).removeprefix("mr-")
        for model, cell in zip(SHIPPED, cells, strict=True):
            numbers = re.findall(NUMBER, cell)
            assert numbers == [_fmt(figures[model][(report, s)][0]) for s in ("2", "4")], (line, model)
            checked += 2
    assert checked == 5 * 4 * 2


def test_readme_denoise_paragraph_is_the_shipped_scores() -> None:
    """The README's paragraph on `metasrgan-mri-denoise`: its PSF + 2 % Rician row, `robust`'s beside
    it, the lowest MR file, the clean PSF at x2 and the Siemens head's range under k-space + noise."""
    text = (ROOT / "README.md").read_text()
    start = text.index("`metasrgan-mri-denoise` (`--model metasrgan-mri-denoise`) is `robust` continued")
    paragraph = " ".join(text[start : text.index("\n\n", start)].split())
    den, rob = _figures("metasrgan-mri-denoise"), _figures("metasrgan-mri-robust")
    scales = ("1.5", "2", "3", "4")

    def row(figures: dict, report: str) -> str:
        return " / ".join(_fmt(figures[(report, s)][0]) for s in scales)

    assert f"**{row(den, 'mr-gauss-rician2')}** dB at x1.5 / 2 / 3 / 4" in paragraph
    assert f"(`robust` {row(rob, 'mr-gauss-rician2')})" in paragraph
    gain, scale, name = min((g, s, MR_FILES[i]) for s in scales for i, g in enumerate(den[("mr-gauss-rician2", s)][2]))
    assert gain > 0 and name == "MR2_UNCR.dcm" and f"lowest MR2 {_fmt(gain)} at x{scale}" in paragraph
    assert f"it gives {_fmt(den[('mr-gauss', '2')][0])} at x2" in paragraph
    siemens = [den[("mr-kspace-rician2", s)][2][0] for s in ("2", "3", "4")]
    assert all(g < 0 for g in siemens) and f"x2-x4, {_fmt(max(siemens))} to {_fmt(min(siemens))}" in paragraph


def test_readme_paper_comparison_denoise_sentence_is_the_shipped_scores() -> None:
    text = " ".join((ROOT / "README.md").read_text().split())
    sentence = text[text.index("`metasrgan-mri-denoise`, added since, was not rerun") :].split("(`models/")[0]
    den = _figures("metasrgan-mri-denoise")
    expected = [den[(report, s)][:2] for s in ("2", "4") for report in ("mr-bicubic", "mr-gauss-rician2")]
    found = re.findall(rf"({NUMBER}) ± (\d+\.\d\d)", sentence)
    assert found == [(_fmt(mean), f"{ci:.2f}") for mean, ci in expected], sentence


def test_readme_zero_fill_table_is_the_shipped_scores() -> None:
    """The README's table against zero-filling: gains over bicubic and the margins over zero-fill, recomputed."""
    module = _summarise()
    root = ROOT / "models" / "metasrgan-mri" / "eval" / "zero-fill"
    assert sorted(p.name for p in root.iterdir()) == [
        "mr-kspace",
        "mr-kspace-rician2",
        "mr-native-kspace",
        "mr-native-kspace-rician2",
    ]
    names = {"zero-fill (the scanner's interpolation)": "zero-fill", "`metasrgan-mri`": "default"}
    names |= {f"`-{m}`": m for m in ("robust", "gan", "denoise")}
    readme = (ROOT / "README.md").read_text().split("**Against the scanner's own interpolation.**")[1]
    four = " / ".join([f"({NUMBER})"] * 4)
    row = re.compile(rf"^\| (k-space truncation(?: \+ 2 % Rician)?): (.*?) \| {four} \| (?:{four})? ?\|$")
    checked = 0
    for line in readme.split("\n\n")[1].splitlines():  # the table after the lead paragraph
        m = row.match(line)
        if not m:
            continue
        report = "mr-native-kspace" + ("-rician2" if "Rician" in m[1] else "")
        cells = module.cell_figures([("", root / report / "per_image.csv")])
        model = names[m[2]]
        gains = [cells[(s, model)].mean for s in ("1.5", "2", "3", "4")]
        assert list(m.groups()[2:6]) == [_fmt(g) for g in gains], line
        if model != "zero-fill":
            base = [cells[(s, "zero-fill")].mean for s in ("1.5", "2", "3", "4")]
            assert list(m.groups()[6:10]) == [_fmt(g - b) for g, b in zip(gains, base)], line
        checked += 1
    assert checked == 10


def test_readme_data_consistency_table_is_the_shipped_scores() -> None:
    """The README's table of the models with --data-consistency, against bicubic and zero-fill, recomputed."""
    module = _summarise()
    root = ROOT / "models" / "metasrgan-mri" / "eval" / "data-consistency"
    assert len([p for p in root.iterdir() if (p / "per_image.csv").exists()]) == 10  # the MR reports
    names = {"`metasrgan-mri`": "default"} | {f"`-{m}`": m for m in ("robust", "gan", "denoise")}
    readme = (ROOT / "README.md").read_text().split("**With k-space data consistency (`--data-consistency`).**")[1]
    num = rf"(?:\*\*)?({NUMBER})(?:\*\*)?"
    four = " / ".join([num] * 4)
    row = re.compile(rf"^\| (k-space truncation(?: \+ 2 % Rician)?): (.*?) \| {four} \| {four} \|$")
    checked = 0
    for line in readme.split("\n\n")[1].splitlines():
        m = row.match(line)
        if not m:
            continue
        report = "mr-native-kspace" + ("-rician2" if "Rician" in m[1] else "")
        cells = module.cell_figures([("", root / report / "per_image.csv")])
        model = f"{names[m[2]]} +dc"
        gains = [cells[(s, model)].mean for s in ("1.5", "2", "3", "4")]
        base = [cells[(s, "zero-fill")].mean for s in ("1.5", "2", "3", "4")]
        assert list(m.groups()[2:6]) == [_fmt(g) for g in gains], line
        assert list(m.groups()[6:10]) == [_fmt(g - b) for g, b in zip(gains, base)], line
        checked += 1
    assert checked == 8
    # the claim in the text: robust with it is above zero-filling on every file at every scale
    cells = module.cell_figures([("", root / "mr-native-kspace" / "per_image.csv")])
    for s in ("1.5", "2", "3", "4"):
        dc, zf = cells[(s, "robust +dc")].files, cells[(s, "zero-fill")].files
        assert all(dc[f] > zf[f] for f in MR_FILES)
