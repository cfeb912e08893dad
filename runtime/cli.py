"""``metasr-run``: super-resolve DICOM, NIfTI, PNG/TIFF/JPEG files, or folders of them.

Examples::

    metasr-run -i frame.dcm -s 1.8                     # writes frame_sr1.8.dcm beside it
    metasr-run -i slice.png --size 512x512 -o big.png
    metasr-run -i vol.nii.gz --spacing 0.5 --axis 2    # exactly 0.5 mm in-plane pixels
    metasr-run -i study/ -s 2 -o study_x2/ --report run.csv
    metasr-run -i a.dcm -i b.dcm -i series/ -s 2 -o out/

Everything that can be checked is checked before the model loads and before anything is written
(every number, every input, every output and report path against the inputs and each other), so
a bad run stops with one line on stderr, exit code 2, nothing written and the inputs untouched.
A run that works prints one line on stderr saying what runs where, and the written path(s) on
stdout. In a folder run each file gets its own verdict; see :mod:`metasr.runtime.folders` for
output names, collisions and resuming.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from metasr.core.atomic import (
    check_name_length,
    check_no_overlap,
    check_replaceable,
    check_writable_folder,
    file_identity,
    nearest_existing_folder,
    publish_file,
)
from metasr.core.choices import Precision
from metasr.core.cli import EXIT_TERMINATED, Verbosity, common_options, one_line, run_command
from metasr.core.errors import InputError, MetaSRError, OutputError, ScaleError
from metasr.core.locks import exclusive_lock, output_lock
from metasr.core.paths import check_new_file, check_write_plan, is_inside, shown
from metasr.models import resolve_model_dir
from metasr.runtime.batch import Batch, SignalGuard, Terminated, finish_report, series_windows, write_one
from metasr.runtime.derivation import check_series_unchanged
from metasr.runtime.ensemble import check_ensemble
from metasr.runtime.folders import (
    JOURNAL_NAME,
    InputSet,
    Item,
    Journal,
    check_report_path,
    default_output_name,
    find_images,
    output_stem,
    partial_path,
    plan_items,
)
from metasr.runtime.jobs import (
    Job,
    check_regular_file,
    parse_device,
    parse_memory_budget,
    parse_scale_option,
    parse_size,
    parse_spacing,
    parse_threads,
    parse_tile,
    read_input,
)
from metasr.runtime.upscaler import DEFAULT_MEMORY_BUDGET_MB, MAX_SCALE, Upscaler
from metasr.scanners.base import Grid
from metasr.scanners.dicom_encoding import Compression
from metasr.scanners.intensity import IntensityRange
from metasr.scanners.select import parse_rules, select_files

__all__ = ["command", "default_output_name", "main"]

PROG = "metasr-run"


@dataclass
class _Run:
    """Options that do not choose the scale: how the model runs and what the command prints."""

    model: Path | None
    device: str
    precision: Precision
    memory_budget: float
    gpu_memory: float | None
    tile: int | None
    threads: int | None
    overwrite: bool
    verbosity: Verbosity
    report: Path | None
    notes: list[str]
    server: str | None = None
    ensemble: bool = False
    data_consistency: bool = False

    def load(self) -> Upscaler:
        if self.server is not None:  # the pixels go to a metasr-serve (Triton) server instead
            from metasr.runtime.remote import RemoteUpscaler

            return RemoteUpscaler(self.server)  # type: ignore[return-value]
        dev = parse_device(self.device)
        return Upscaler(
            self.model,
            device=dev,
            memory_budget_mb=self.memory_budget,
            gpu_memory_mb=self.gpu_memory,
            tile_size=self.tile,
            threads=self.threads,
            precision=self.precision,
            ensemble=self.ensemble,
            data_consistency=self.data_consistency,
        )

    def announce(self, up: Upscaler, notes: Sequence[str] = ()) -> None:
        """The status line and notes, printed once every check has passed."""
        if self.verbosity >= Verbosity.NORMAL:
            print(up.describe(), file=sys.stderr)
            for note in [*self.notes, *notes]:
                print(f"{PROG}: note: {one_line(note)}", file=sys.stderr)


def _make_job(scale_text: str | None, size_text: str | None, spacing_text: str | None, **kw: object) -> Job:
    given = (("--scale", scale_text), ("--size", size_text), ("--spacing", spacing_text))
    chosen = [name for name, value in given if value is not None]
    if len(chosen) != 1:
        raise InputError(
            "give exactly one of --scale, --size or --spacing" + (f" (got {' and '.join(chosen)})" if chosen else "")
        )
    return Job(
        scale=parse_scale_option(scale_text) if scale_text is not None else None,
        size=parse_size(size_text) if size_text is not None else None,
        spacing=parse_spacing(spacing_text) if spacing_text is not None else None,
        **kw,  # type: ignore[arg-type]
    )


def _inputs(texts: Sequence[str]) -> list[Path]:
    """The ``--input`` paths, each an existing regular file or folder (an empty string is no input)."""
    if not texts or any(not t.strip() for t in texts):
        raise InputError("no input given; pass --input FILE or --input FOLDER (repeat --input for several)")
    paths = [Path(t) for t in texts]
    for p in paths:
        check_regular_file(p)
    return paths


def _output_is_folder(text: str) -> bool:
    try:
        return text.endswith(("/", os.sep)) or Path(text).is_dir()
    except OSError:  # a name too long to look up: not a folder, and refused as a file name next
        return False


def _probe_folder(folder: Path) -> list[Path]:
    """Check that ``folder`` exists or can be created; returns the folders that would be created."""
    existing = nearest_existing_folder(folder)
    check_writable_folder(existing)
    missing, p = [], Path(os.path.abspath(folder))
    while p != existing:
        missing.append(p)
        p = p.parent
    return missing


def _make_folders(folders: list[Path]) -> None:
    for p in reversed(folders):
        try:
            p.mkdir(exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create folder {p}: {e.strerror or type(e).__name__}") from None


def _remove_if_empty(folders: Sequence[Path]) -> None:
    for p in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        try:
            p.rmdir()
        except OSError:
            pass  # not empty, or already gone


def _run_single(source: Path, output: str | None, job: Job, run: _Run, guard: SignalGuard) -> int:
    _, rejected = select_files([source], parse_rules(job.select))
    if rejected:  # the one file is not selected: nothing to do, which is not an error
        if run.verbosity >= Verbosity.NORMAL:
            print(f"{PROG}: skipped {source}: {rejected[source]}", file=sys.stderr)
        finish_report(
            run.report,
            [{"input": str(source), "output": "", "status": "skipped", "reason": rejected[source], "seconds": 0.0}],
        )
        return 0
    with read_input(source, job) as scan:
        scale, tag, notes = job.scale_for(scan)
        name = default_output_name(source, tag, scan.default_suffix)
        if output is None:
            out = source.with_name(name)
        else:
            out = Path(output) / name if _output_is_folder(output) else Path(output)
        check_name_length(out)
        InputSet([source]).check("output path", out)
        check_replaceable(out, "output path")
        if (out.exists() or out.is_symlink()) and not run.overwrite:
            raise OutputError(f"output {out} already exists; pass --overwrite to replace it or choose another --output")
        if output is not None and _output_is_folder(output):
            to_create = _probe_folder(out.parent)  # a folder named with a trailing slash is created
        else:
            check_writable_folder(out.parent if str(out.parent) else Path("."))
            to_create = []
        scan.check_output_name(out)
        if run.report is not None:
            check_no_overlap([("output", out), ("--report", run.report)], [source])
        up = run.load()
        up.check_scale(scale, allow_extrapolation=job.allow_extrapolation)
        big_h, big_w = scale.output_size(*scan.size)
        if min(big_h, big_w) < 1:
            raise ScaleError(f"scale {scale} turns a {scan.size[1]}x{scan.size[0]} image into nothing")
        if run.ensemble:
            check_ensemble(*scan.size, scale.value)
        run.announce(up, notes)
        _make_folders(to_create)
        start = time.perf_counter()
        try:
            with output_lock(out, "output"):  # a second run to this output refuses in one line
                if (out.exists() or out.is_symlink()) and not run.overwrite:
                    raise OutputError(f"output {out} already exists; pass --overwrite to replace it")
                partial = partial_path(out, scan.default_suffix)

                def move(written: Path) -> Path:  # never over what another run wrote meanwhile
                    return publish_file(written, out, replace=run.overwrite)

                try:
                    written = write_one(up, scan, scale, tag, partial, then=move, guard=guard, job=job)
                except OutputError as e:  # name the output the user asked for, not its hidden partial file
                    raise OutputError(str(e).replace(str(partial), str(out))) from None
            guard.check()
        except BaseException:
            _remove_if_empty(to_create)
            raise
        if run.verbosity >= Verbosity.NORMAL:
            for note in scan.notes:  # notes name the file the user asked for, not its hidden partial file
                print(f"{PROG}: note: {one_line(note.replace(partial.name, out.name))}", file=sys.stderr)
        seconds = round(time.perf_counter() - start, 3)
    click.echo(shown(written, limit=1 << 20))  # a newline or escape in the name stays on one line
    row = {"input": str(source), "output": str(written), "status": "written", "reason": "", "seconds": seconds}
    finish_report(run.report, [row])
    return 0


def _folder_output(inputs: list[Path], output: str | None, job: Job) -> Path:
    if output is not None:
        return Path(output)
    if len(inputs) > 1:
        raise InputError("several inputs need --output FOLDER (their outputs go there, folder trees kept)")
    folder = inputs[0].resolve()
    if folder.parent == folder:
        raise InputError(f"input {inputs[0]} is the file system root; give --output FOLDER")
    tag = (job.tag or "sr").replace("/", "-")
    return folder.with_name(f"{folder.name}_{tag}")


def _check_output_holds_no_inputs(inputs: list[Path], output: Path) -> None:
    """An output folder inside an input folder is not read as input; refuse it if it holds images
    that are not this command's outputs (they would get no verdict)."""
    if not output.is_dir() or not any(given.is_dir() and is_inside(output, given) for given in inputs):
        return
    ours = set(Journal(output).records)
    strays = [p for p in find_images(output) if p.relative_to(output).as_posix() not in ours]
    if strays:
        raise InputError(
            f"--output {shown(output)} lies inside the input folder and holds {len(strays)} image(s) that are not "
            f"outputs of metasr-run (e.g. {shown(strays[0])}); they would never be read; choose an output folder "
            "outside the input tree"
        )


def _renamed_note(renamed: list[Item]) -> str:
    first = renamed[0]
    return (
        f"{len(renamed)} input(s) would share an output name with another input and are numbered "
        f"(e.g. {first.source} -> {first.stem}_...)"
    )


def _run_folders(inputs: list[Path], output_text: str | None, job: Job, run: _Run, guard: SignalGuard) -> int:
    from metasr import __version__

    output = _folder_output(inputs, output_text, job)
    if output.exists() and not output.is_dir():
        raise OutputError(f"--output {output} is a file; folder inputs need an output folder")
    out_id = file_identity(output)
    for given in inputs:
        if given.is_dir() and out_id is not None and file_identity(given) == out_id:
            raise OutputError(
                f"--output {output} is the input folder {given}; choose another folder (inputs are never overwritten)"
            )
    to_create = _probe_folder(output)
    _check_output_holds_no_inputs(inputs, output)
    items = plan_items(inputs, output)
    sources = [i.source for i in items]
    journal = output / JOURNAL_NAME
    if journal.is_symlink():
        raise OutputError(f"resume journal {journal} is a symbolic link; remove it (a rerun then redoes every file)")
    check_replaceable(journal, "resume journal")
    writes = [("resume journal", journal)]
    if run.report is not None:
        writes.append(("--report", run.report))
    check_no_overlap(writes, sources)
    up = run.load()
    if job.scale is not None:
        up.check_scale(job.scale, allow_extrapolation=job.allow_extrapolation)
    new_dirs = to_create + sorted({i.out_dir for i in items if not i.out_dir.exists()})
    _make_folders(to_create)
    with exclusive_lock(output, "output folder"):  # one run per output folder and its journal
        try:
            renamed = [i for i in items if i.stem != output_stem(i.source)]
            journal = Journal(output)
            notes = [_renamed_note(renamed)] if renamed else []
            if journal.skipped:
                notes.append(f"{journal.path}: {journal.skipped} damaged line(s) skipped; they prove no output")
            settings = job.settings() | {"model": up.model_id, "software": __version__} | up.pixel_settings()
            chosen, rejected = select_files(sources, parse_rules(job.select))
            batch = Batch(up, job, output, settings, run.verbosity, run.overwrite, InputSet(sources), journal, guard)
            try:
                windows = series_windows(chosen, job.intensity)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM while series are grouped: every file is "not run"
                row = {"output": "", "status": "not run", "reason": "interrupted", "seconds": 0.0}
                finish_report(run.report, [{"input": str(s), **row} for s in sources])
                raise
            if not run.overwrite:  # a series that grew since its outputs were written: refused before any write
                check_series_unchanged(journal.records, settings, windows, output)
            run.announce(up, notes)
            batch.skip(rejected)
            code = batch.run([i for i in items if i.source not in rejected], windows)
        finally:
            _remove_if_empty(new_dirs)
    finish_report(run.report, batch.rows)
    return code


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--input",
    "-i",
    "input_texts",
    multiple=True,
    help="Image file (DICOM, NIfTI, PNG, TIFF, JPEG) or folder (series subfolders included); repeat for several.",
)
@click.option("--scale", "-s", "scale_text", help=f"Scale factor from 1 to {MAX_SCALE}, e.g. 1.8 or 7/3.")
@click.option("--size", "size_text", help="Exact output size WxH (one scale must give both sides).")
@click.option("--spacing", "spacing_text", help="Target pixel spacing in mm (DICOM/NIfTI, square pixels).")
@click.option(
    "--output",
    "-o",
    "output_text",
    help="Output file, or folder (a trailing / makes one; default: beside the input, e.g. frame_sr1.8.dcm).",
)
@click.option("--report", type=click.Path(path_type=Path), help="Per-file report, CSV or JSON by suffix.")
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    help="Export folder, or the name of a shipped model (--list-models); default: the shipped default model.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or tensorrt; cuda:1 picks GPU 1.")
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    help="fp32 (true fp32: TF32 off), tf32 or fp16 on a GPU; the CPU always runs fp32.",
)
@click.option("--server", help="HOST:PORT of a metasr-serve gRPC endpoint: upscale there instead of here.")
@click.option(
    "--ensemble",
    is_flag=True,
    help="Average the 8 orientations of each image (self-ensemble, exact on the pixel grid): 8x the time, a"
    " little less error (held-out MR: 0.02-0.15 dB with the default model).",
)
@click.option(
    "--data-consistency",
    is_flag=True,
    help="MR acquired at a lower matrix: keep the input's own k-space in the output (the output reduced by k-space"
    " truncation gives the input back; only the frequencies above it come from the model). Not for blurred,"
    " photographic or video inputs.",
)
@click.option(
    "--list-models",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _list_models(ctx) if value else None,
    help="List the shipped models (names for --model) and exit.",
)
@click.option(
    "--allow-extrapolation", is_flag=True, help=f"Accept scales outside the model's trained range (up to {MAX_SCALE})."
)
@click.option("--axis", type=click.IntRange(0, 3), help="NIfTI: the volume axis whose slices are super-resolved.")
@click.option(
    "--intensity",
    type=click.Choice([m.value for m in IntensityRange], case_sensitive=False),
    default=IntensityRange.AUTO.value,
    show_default=True,
    help="Stored-value window mapped to the model's [0, 1] range.",
)
@click.option(
    "--compress",
    type=click.Choice([c.value for c in Compression], case_sensitive=False),
    default=Compression.KEEP.value,
    show_default=True,
    help="DICOM output encoding, lossless only: keep (the source's codec where a lossless encoder exists), none,"
    " rle, jpeg-ls or j2k.",
)
@click.option(
    "--grid",
    type=click.Choice([g.value for g in Grid], case_sensitive=False),
    default=Grid.CORNER.value,
    show_default=True,
    help="corner: keep the field of view's outer corner (pixels exactly old/scale); center: keep the first and"
    " last pixel centres (MONAI/ITK resampling).",
)
@click.option(
    "--select",
    "select",
    multiple=True,
    help="Process only DICOM files whose attribute matches, e.g. Modality=CT, ImageType=PRIMARY,"
    " ImageType!=LOCALIZER, Modality=CT,MR (any of); repeat to require several. Others are reported as skipped.",
)
@click.option(
    "--memory-budget",
    "memory_text",
    help=f"Working memory per tile in MiB [default: {DEFAULT_MEMORY_BUDGET_MB}] (large images are tiled).",
)
@click.option(
    "--gpu-memory",
    "gpu_memory_text",
    help="GPU memory one run may use in MiB [default: half the GPU's free memory]; larger images are tiled.",
)
@click.option("--tile", type=int, help="Tile side in pixels instead of --memory-budget (same result up to rounding).")
@click.option("--threads", type=int, help="CPU threads (default and most: the CPUs this process may use).")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing outputs (default: refuse, except folder outputs the resume journal proves).",
)
@common_options(PROG)
def command(
    input_texts: tuple[str, ...],
    scale_text: str | None,
    size_text: str | None,
    spacing_text: str | None,
    output_text: str | None,
    report: Path | None,
    model: Path | None,
    device: str,
    precision: str,
    allow_extrapolation: bool,
    axis: int | None,
    intensity: str,
    compress: str,
    grid: str,
    select: tuple[str, ...],
    memory_text: str | None,
    gpu_memory_text: str | None,
    tile: int | None,
    threads: int | None,
    overwrite: bool,
    verbosity: Verbosity,
    server: str | None = None,
    ensemble: bool = False,
    data_consistency: bool = False,
) -> int:
    """Super-resolve medical images by any scale with an exported Meta-SRGAN model."""
    parse_device(device)
    if server is not None:
        from metasr.runtime.remote import parse_server_address

        parse_server_address(server)
        if model is not None:
            raise InputError("--model and --server exclude each other (the server runs its own model)")
        if ensemble:
            raise InputError("--ensemble and --server exclude each other (the server runs each image once)")
        if data_consistency:
            raise InputError("--data-consistency and --server exclude each other (the server returns its own pixels)")
    if memory_text is not None and tile is not None:
        raise InputError("give --tile or --memory-budget, not both (both size the tiles)")
    job = _make_job(
        scale_text,
        size_text,
        spacing_text,
        allow_extrapolation=allow_extrapolation,
        axis=axis,
        intensity=intensity.lower(),
        compress=Compression.parse(compress).value,
        grid=Grid(grid.lower()).value,
        select=tuple(select),
    )
    parse_rules(select)  # a bad rule stops the run before anything is read
    capped, note = parse_threads(threads)
    run = _Run(
        model=model,
        device=device,
        precision=Precision.parse(precision),
        memory_budget=parse_memory_budget(memory_text) if memory_text is not None else DEFAULT_MEMORY_BUDGET_MB,
        gpu_memory=None if gpu_memory_text is None else parse_memory_budget(gpu_memory_text, "--gpu-memory"),
        tile=parse_tile(tile),
        threads=capped,
        overwrite=overwrite,
        verbosity=verbosity,
        report=report,
        notes=[note] if note else [],
        server=server,
        ensemble=ensemble,
        data_consistency=data_consistency,
    )
    if output_text is not None and not output_text.strip():
        raise InputError("--output is empty; give a file or folder path, or leave it out")
    inputs = _inputs(input_texts)
    if report is not None:
        check_report_path(report)
        check_replaceable(report, "--report")
        check_writable_folder(report.parent if str(report.parent) else Path("."))
        InputSet(inputs).check("--report", report)
        protected = resolve_model_dir(model)
        check_write_plan([("--report", report)], [], [("model folder", protected)])
        check_new_file(report, "--report", overwrite)  # reports follow the rules of outputs
    with SignalGuard() as guard:
        try:
            if len(inputs) == 1 and not inputs[0].is_dir():
                return _run_single(inputs[0], output_text, job, run, guard)
            return _run_folders(inputs, output_text, job, run, guard)
        except Terminated:
            print(f"{PROG}: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        except OSError as e:
            if isinstance(e, MetaSRError):
                raise
            # a path the file system refuses to look up (too long, a loop, no permission): one line
            where = f" {e.filename}" if e.filename else ""
            raise OutputError(f"cannot use{where}: {e.strerror or type(e).__name__}; choose another path") from None


def _card_summary(card: Path) -> str:
    """The model card's one-line summary (its first line starting with ``Summary:``), if any."""
    try:
        for line in card.read_text(encoding="utf-8").splitlines():
            if line.startswith("Summary:"):
                return line.removeprefix("Summary:").strip()
    except OSError:
        pass
    return ""


def _list_models(ctx: click.Context) -> None:
    """Print one line per shipped model: name, model id, scale range, what it is for."""
    from metasr.core.manifest import model_id, read_manifest
    from metasr.models import DEFAULT_MODEL, resolve_model_dir, shipped_models

    for name in shipped_models():
        manifest = read_manifest(resolve_model_dir(name), verify=False)
        lo, hi = manifest.get("scale_range", ["?", "?"])
        summary = _card_summary(resolve_model_dir(name) / "MODEL_CARD.md")
        default = " (default)" if name == DEFAULT_MODEL else ""
        line = f"{name}{default}  {model_id(manifest)[:12]}  x{lo:g}-{hi:g}"
        click.echo(f"{line}  {summary}" if summary else line)
    ctx.exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``metasr-run``; returns the exit code."""
    return run_command(command, argv, PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
