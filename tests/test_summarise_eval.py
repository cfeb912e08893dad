"""scripts/summarise_eval.py: gains as the mean of files, and --against, the default's replacement rule."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "summarise_eval.py"


def _report(root: Path, name: str, model: str, gains: dict[str, float], bicubic: float = 30.0) -> None:
    """One metasr-eval report: per scale, two slices of a volume and one single image.

    ``gains`` maps a scale to the model's gain over bicubic on the single image; the volume's two
    slices get that gain +1 and +3, so the volume's mean is the gain +2, the mean of the two files
    the gain +1 and the mean of the three images the gain +4/3.
    """
    folder = root / name
    folder.mkdir(parents=True)
    with open(folder / "per_image.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "scale", "model", "psnr", "ssim", "group"])
        for scale, gain in gains.items():
            for image, group, extra in (("vol#0", "vol", 1.0), ("vol#1", "vol", 3.0), ("one.dcm", "one.dcm", 0.0)):
                w.writerow([image, scale, "bicubic", f"{bicubic:.4f}", "0.9", group])
                w.writerow([image, scale, model, f"{bicubic + gain + extra:.4f}", "0.9", group])


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_gain_is_the_mean_of_files(tmp_path: Path) -> None:
    """A volume counts once: its slices' +2 and +4 and a single image's +1 give +2.00, not +2.33."""
    _report(tmp_path / "a", "mr-gauss", "m", {"2": 1.0})
    r = _run(f"new={tmp_path / 'a'}")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("| 2 | new |"))
    assert "| +2.00 ± 12.71 | +1.00 | +3.00 |" in row  # t(0.975, 1 dof) x 1.414 / sqrt(2)


@pytest.mark.parametrize(
    "new_gains, code, lines",
    [
        ({"1.5": 0.6, "2": 0.7}, 0, ["- new: better in 4 of 4 cells"]),
        (
            {"1.5": 0.6, "2": 0.5},  # a tie at x2 is not better
            1,
            [
                "- new: better in 2 of 4 cells",
                "  - not better: mr-bicubic x2 +0.00",
                "  - not better: mr-gauss x2 +0.00",
            ],
        ),
        ({"1.5": 0.6, "2": 0.3}, 1, ["  - not better: mr-gauss x2 -0.20"]),
    ],
)
def test_against_is_the_replacement_rule(tmp_path: Path, new_gains, code, lines) -> None:
    for report in ("mr-bicubic", "mr-gauss"):
        _report(tmp_path / "default", report, "metasrgan", {"1.5": 0.5, "2": 0.5})
        _report(tmp_path / "new", report, "metasrgan", new_gains)
    r = _run(f"default={tmp_path / 'default'}", f"new={tmp_path / 'new'}", "--against", "default")
    assert r.returncode == code, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert "### against default" in out
    assert all(line in out for line in lines), r.stdout


def test_against_fails_a_model_not_evaluated_everywhere(tmp_path: Path) -> None:
    """Better where measured, but a report of the default's is missing: not a replacement."""
    for report in ("mr-bicubic", "ct-gauss"):
        _report(tmp_path / "default", report, "metasrgan", {"2": 0.5})
    _report(tmp_path / "new", "mr-bicubic", "metasrgan", {"2": 0.9})
    r = _run(f"default={tmp_path / 'default'}", f"new={tmp_path / 'new'}", "--against", "default")
    assert r.returncode == 1
    assert "- new: better in 1 of 1 cells" in r.stdout and "not evaluated in 1 of default's cells" in r.stdout


def test_bad_input_is_one_line_and_no_tables(tmp_path: Path) -> None:
    _report(tmp_path / "a", "mr-gauss", "m", {"2": 1.0})
    _report(tmp_path / "b", "mr-gauss", "m", {"2": 1.0}, bicubic=31.0)  # another LR
    for args, message in (
        ([f"a={tmp_path / 'a'}", "--against", "nope"], "--against nope: no such model"),
        ([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"], "bicubic differs"),
        ([tmp_path / "empty"], "no metasr-eval reports"),
    ):
        r = _run(*args)
        assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr and "Traceback" not in r.stderr
