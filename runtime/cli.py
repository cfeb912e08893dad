"""``metasr-run``: super-resolve DICOM, NIfTI, PNG/TIFF/JPEG files (or folders of them).

Examples::

    metasr-run --input frame.dcm --scale 1.8              # writes frame_sr1.8.dcm beside it
    metasr-run --input slice.png --size 512x512 -o big.png
    metasr-run --input vol.nii.gz --spacing 0.5 --axis 2  # target 0.5 mm in-plane pixels
    metasr-run --input series/ --scale 2 --output series_x2/

Everything that can be checked is checked before any work starts (input readable and finite,
scale usable, output writable and not the input, model intact), so a bad run stops with one line
on stderr, exit code 2, no output file and the input untouched. A run that works prints one line
on stderr saying what runs where, and the written path(s) on stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import click

from metasr.core.atomic import check_output_path, check_writable_folder
from metasr.core.cli import one_line, run_command
from metasr.core.errors import InputError, MetaSRError, OutputError, ScaleError
from metasr.core.scale import MAX_DENOMINATOR, Scale, hr_length
from metasr.runtime.backends import Device, Precision
from metasr.runtime.upscaler import DEFAULT_MEMORY_BUDGET_MB, MAX_SCALE, Upscaler, check_image

if TYPE_CHECKING:  # the scanners are imported when a file is read, keeping --help fast
    from metasr.scanners import ScanImage

__all__ = ["command", "default_output_name", "main", "scale_for_size", "scale_for_spacing"]

PROG = "metasr-run"


def _simplest_fraction_in(lo: Fraction, hi: Fraction) -> Fraction:
    """The fraction with the smallest denominator in ``[lo, hi)`` (Stern-Brocot descent)."""
    if lo.denominator == 1:
        return lo
    # smallest denominator in the half-open interval: search denominators upward (small bound)
    for q in range(1, MAX_DENOMINATOR + 1):
        p = -((-lo.numerator * q) // lo.denominator)  # ceil(lo * q)
        if Fraction(p, q) < hi:
            return Fraction(p, q)
    raise ScaleError(f"no scale with a denominator up to {MAX_DENOMINATOR} lies in [{lo}, {hi})")


def scale_for_size(height: int, width: int, out_h: int, out_w: int) -> Scale:
    """The scale giving exactly ``out_h x out_w`` from ``height x width``: ``floor(n*r)`` must hit both.

    One scale serves both axes (the contract has one ``r``), so the target must keep the aspect
    ratio within a pixel. Among the scales that work, the simplest fraction is chosen.

    Raises:
        ScaleError: if no single scale gives both sizes.
    """
    lo = max(Fraction(out_h, height), Fraction(out_w, width))
    hi = min(Fraction(out_h + 1, height), Fraction(out_w + 1, width))
    if lo >= hi:
        raise ScaleError(
            f"no single scale turns {width}x{height} into {out_w}x{out_h} (the aspect ratio "
            f"differs); one scale serves both axes, so give a size with the input's aspect ratio, "
            f"e.g. {out_w}x{hr_length(height, Fraction(out_w, width))}"
        )
    r = _simplest_fraction_in(lo, hi)
    s = Scale(r)
    assert s.output_size(height, width) == (out_h, out_w)
    return s


def scale_for_spacing(spacing: tuple[float, float] | None, target_mm: float) -> Scale:
    """The scale that turns pixels of ``spacing`` mm into pixels of about ``target_mm`` mm.

    Raises:
        InputError: no spacing in the file, or non-square pixels.
        ScaleError: a target that is not a positive finite number.
    """
    if not (target_mm > 0 and target_mm < float("inf")):
        raise ScaleError(f"--spacing must be a positive number of millimetres, got {target_mm!r}")
    if spacing is None:
        raise InputError("the input has no pixel spacing (only DICOM and NIfTI carry one); use --scale or --size")
    row, col = (float(v) for v in spacing)
    if abs(row - col) > 1e-6 * max(row, col):
        raise InputError(
            f"the input's pixels are not square ({row:g} x {col:g} mm) and one scale serves both axes; "
            f"use --scale or --size"
        )
    return Scale.parse(Fraction(repr(row)) / Fraction(repr(float(target_mm))))


def _parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(H, W)``."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise InputError(f"--size must look like 512x384 (width x height in pixels), got {text!r}")
    return int(parts[1]), int(parts[0])


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def default_output_name(source: Path, tag: str, suffix: str) -> str:
    """``frame.dcm`` + ``sr1.8`` -> ``frame_sr1.8.dcm`` (fractions as ``7-3``)."""
    return f"{_stem(source)}_{tag.replace('/', '-')}{suffix}"


def _check_output(out: Path, scan: ScanImage) -> Path:
    """Everything about the output that can fail, checked before any work: path, folder, name."""
    check_output_path(out, scan.path)
    scan.check_output_name(out)
    return out


@dataclass
class _Job:
    """What one run needs besides the file: how to pick the scale and where outputs go."""

    scale: Scale | None
    size: tuple[int, int] | None
    spacing: float | None
    allow_extrapolation: bool
    axis: int | None

    def scale_for(self, frames_shape: tuple[int, ...], spacing: tuple[float, float] | None) -> tuple[Scale, str]:
        """The scale for one image and the tag naming its output (``sr1.8`` or ``512x384``)."""
        h, w = frames_shape[-2:]
        if self.scale is not None:
            return self.scale, f"sr{self.scale}"
        if self.size is not None:
            return scale_for_size(h, w, *self.size), f"{self.size[1]}x{self.size[0]}"
        assert self.spacing is not None
        s = scale_for_spacing(spacing, self.spacing)
        return s, f"sr{s}"


def _read_checked(path: Path, job: _Job) -> ScanImage:
    from metasr.scanners import read_image

    scan = read_image(path, axis=job.axis)
    try:
        check_image(scan.frames)
    except InputError as e:
        raise InputError(f"{path.name}: {e}") from None
    return scan


def _run_one(up: Upscaler, scan: ScanImage, scale: Scale, tag: str, out: Path) -> Path:
    """Upscale, write the derived file, then print the file's notes (one line each, beside any bar)."""
    from tqdm import tqdm

    from metasr import __version__
    from metasr.scanners import DerivationInfo

    software = __version__
    sr = up.upscale(scan.frames, scale)
    label = tag.removeprefix("sr")
    info = DerivationInfo(
        scale=label, model_id=up.model_id, software_version=software, model_name=up.model_name, exact_scale=scale.value
    )
    written = scan.write_derived(sr, out, info)
    for note in scan.notes:
        tqdm.write(f"{PROG}: note: {one_line(note)}", file=sys.stderr)
    return written


def _load(
    model: Path | None, device: Device, budget: float, threads: int | None, precision: Precision = Precision.FP32
) -> Upscaler:
    return Upscaler(model, device=device, memory_budget_mb=budget, threads=threads, precision=precision)


def _check_scale_early(text: str) -> Scale:
    """Reject malformed scales before reading anything (the model's range is checked later)."""
    s = Scale.parse(text)
    if s.value < 1 or s.value > MAX_SCALE:
        raise ScaleError(f"--scale must be between 1 and {MAX_SCALE}, got {text}")
    return s


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--input",
    "-i",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Image file (DICOM, NIfTI, PNG, TIFF, JPEG) or a folder of them.",
)
@click.option("--scale", "-s", "scale_text", help="Scale factor, e.g. 1.8 or 7/3.")
@click.option("--size", "size_text", help="Exact output size WxH (one scale must give both sides).")
@click.option("--spacing", type=float, help="Target pixel spacing in mm (DICOM/NIfTI; square pixels).")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Output file, or folder (default: beside the input, e.g. frame_sr1.8.dcm).",
)
@click.option("--model", type=click.Path(path_type=Path), help="Export folder (default: the shipped model).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or tensorrt.")
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    help="TensorRT engine precision: fp32 or fp16 (other devices run fp32).",
)
@click.option(
    "--allow-extrapolation", is_flag=True, help=f"Accept scales outside the model's trained range (up to {MAX_SCALE})."
)
@click.option("--axis", type=int, help="NIfTI: the volume axis whose slices are super-resolved.")
@click.option(
    "--memory-budget",
    type=float,
    default=DEFAULT_MEMORY_BUDGET_MB,
    show_default=True,
    help="Working memory per tile in MiB (large images are tiled, results unchanged).",
)
@click.option("--threads", type=int, help="CPU threads (default: all this process may use).")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Folder input: redo files whose output exists (default: keep them, so an interrupted "
    "batch resumes where it stopped).",
)
def command(
    input_path: Path,
    scale_text: str | None,
    size_text: str | None,
    spacing: float | None,
    output: Path | None,
    model: Path | None,
    device: str,
    precision: str,
    allow_extrapolation: bool,
    axis: int | None,
    memory_budget: float,
    threads: int | None,
    overwrite: bool,
) -> int:
    """Super-resolve medical images by any scale with an exported Meta-SRGAN model."""
    dev = Device.parse(device)
    prec = Precision.parse(precision)
    chosen = [
        name for name, v in (("--scale", scale_text), ("--size", size_text), ("--spacing", spacing)) if v is not None
    ]
    if len(chosen) != 1:
        raise InputError(
            "give exactly one of --scale, --size or --spacing" + (f" (got {' and '.join(chosen)})" if chosen else "")
        )
    if not memory_budget > 0:
        raise InputError(f"--memory-budget must be a positive number of MiB, got {memory_budget}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    job = _Job(
        scale=_check_scale_early(scale_text) if scale_text is not None else None,
        size=_parse_size(size_text) if size_text is not None else None,
        spacing=spacing,
        allow_extrapolation=allow_extrapolation,
        axis=axis,
    )
    if input_path.is_dir():
        return _run_folder(input_path, output, job, model, dev, memory_budget, threads, overwrite, prec)
    if not input_path.exists():
        raise InputError(f"input {input_path} does not exist; give an image file or a folder of images")

    scan = _read_checked(input_path, job)
    with scan:
        scale, tag = job.scale_for(scan.frames.shape, scan.spacing)
        name = default_output_name(input_path, tag, scan.default_suffix)
        out = output / name if output is not None and output.is_dir() else output or input_path.with_name(name)
        _check_output(out, scan)
        up = _load(model, dev, memory_budget, threads, prec)
        up.check_scale(scale, allow_extrapolation=job.allow_extrapolation)
        big_h, big_w = scale.output_size(*scan.size)
        if min(big_h, big_w) < 1:
            raise ScaleError(f"scale {scale} turns a {scan.size[1]}x{scan.size[0]} image into nothing")
        print(up.describe(), file=sys.stderr)
        written = _run_one(up, scan, scale, tag, out)
    click.echo(str(written))
    return 0


def _run_folder(
    folder: Path,
    output: Path | None,
    job: _Job,
    model: Path | None,
    dev: Device,
    budget: float,
    threads: int | None,
    overwrite: bool,
    precision: Precision = Precision.FP32,
) -> int:
    from tqdm import tqdm

    from metasr.scanners import iter_images

    files = list(iter_images(folder))
    if not files:
        raise InputError(f"folder {folder} holds no supported images (DICOM, NIfTI, PNG, TIFF, JPEG)")
    if output is None:
        tag = f"sr{job.scale}" if job.scale is not None else "sr"
        output = folder.with_name(f"{folder.name}_{tag.replace('/', '-')}")
    if output.exists() and not output.is_dir():
        raise OutputError(f"--output {output} is a file; a folder input needs an output folder")
    if output.resolve() == folder.resolve():
        raise OutputError(
            f"--output {output} is the input folder; choose another folder (inputs are never overwritten)"
        )
    if not output.exists():
        check_writable_folder(output.parent if str(output.parent) else Path("."))
    up = _load(model, dev, budget, threads, precision)
    if job.scale is not None:
        up.check_scale(job.scale, allow_extrapolation=job.allow_extrapolation)
    output.mkdir(parents=True, exist_ok=True)
    check_writable_folder(output)
    print(up.describe(), file=sys.stderr)
    failed: list[str] = []
    kept = 0
    with tqdm(files, desc=PROG, unit="file", file=sys.stderr, dynamic_ncols=True) as bar:
        for path in bar:
            try:
                scan = _read_checked(path, job)
                with scan:
                    scale, tag = job.scale_for(scan.frames.shape, scan.spacing)
                    up.check_scale(scale, allow_extrapolation=job.allow_extrapolation)
                    out = _check_output(output / default_output_name(path, tag, scan.default_suffix), scan)
                    if out.exists() and not overwrite:
                        kept += 1  # written by an earlier (interrupted) run: outputs are atomic, so complete
                        continue
                    written = _run_one(up, scan, scale, tag, out)
                tqdm.write(str(written), file=sys.stdout)
            except MetaSRError as e:
                failed.append(path.name)
                tqdm.write(f"{PROG}: skipped {path.name}: {one_line(str(e))}", file=sys.stderr)
    if kept:
        print(f"{PROG}: kept {kept} existing output(s) in {output} (pass --overwrite to redo them)", file=sys.stderr)
    if failed:
        raise InputError(
            f"{len(failed)} of {len(files)} files could not be processed (listed above); "
            f"the others were written to {output}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``metasr-run``; returns the exit code."""
    return run_command(command, argv, PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
