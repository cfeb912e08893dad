"""The per-file work of ``metasr-run``: upscale and write one file, and a folder run in which every
file gets its verdict (written, kept, failed) and one bad file never stops the rest.

Ctrl-C and SIGTERM are held back while an output and its journal line are being written, so an
interrupted run leaves only complete, recorded outputs and a rerun resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from metasr.core.atomic import check_name_length, check_replaceable, publish_file
from metasr.core.cli import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    SignalGuard,
    Terminated,
    Verbosity,
    one_line,
    progress_enabled,
)
from metasr.core.errors import MetaSRError, OutputError, ScaleError
from metasr.core.manifest import sha256_file
from metasr.core.scale import Scale
from metasr.runtime.folders import InputSet, Item, Journal, partial_path, write_report
from metasr.runtime.jobs import Job, check_regular_file, read_input
from metasr.scanners.base import NotAnImageError

if TYPE_CHECKING:
    from metasr.runtime.upscaler import Upscaler
    from metasr.scanners import IntensityWindow, ScanImage

__all__ = ["Batch", "SignalGuard", "Terminated", "write_one"]

PROG = "metasr-run"


def exit_code_for(exc: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def write_one(
    up: Upscaler,
    scan: ScanImage,
    scale: Scale,
    tag: str,
    out: Path,
    then: Callable[[Path], Path] | None = None,
    guard: SignalGuard | None = None,
    job: Job | None = None,
) -> Path:
    """Upscale ``scan`` and write the derived file to ``out`` (atomically).

    The write and ``then(out)`` (e.g. recording and renaming it; returns the final path) run as
    one :meth:`SignalGuard.critical` section of ``guard``; the upscaling before them can be
    interrupted at any time. ``job`` gives the output options (grid, compression, run time).
    """
    from metasr.runtime.derivation import derivation_info, to_center_grid

    big_h, big_w = scale.output_size(*scan.size)
    if min(big_h, big_w) < 1:
        raise ScaleError(f"scale {scale} turns a {scan.size[1]}x{scan.size[0]} image into nothing")
    if getattr(up, "data_consistency", False):
        note = _consistency_note(scan)
        if note and note not in scan.notes:
            scan.notes.append(note)
    sr = up.upscale(scan.frames, scale)
    if job is not None and job.grid == "center":
        sr = to_center_grid(sr, scan.size, scale.value)
    info = derivation_info(up, scale, tag, job)
    with guard.critical() if guard is not None else nullcontext():
        written = scan.write_derived(sr, out, info)
        if then is not None:
            written = then(written)
    return written


def _consistency_note(scan: ScanImage) -> str | None:
    """With ``--data-consistency``: a note when ``scan`` is not what it is for, else None.

    It is for MR acquired at a lower matrix. A non-MR image is not a k-space truncation of a
    finer one (a CT kernel, a photograph or a video frame is blurred instead), and a zero-filled
    MR image (its header or its spectrum says so) has an empty k-space above its acquired matrix,
    which data consistency keeps empty.
    """
    from metasr.core.acquisition import acquired_grid
    from metasr.scanners import ImageFormat

    name = scan.path.name
    assumes = "--data-consistency assumes MR acquired at a lower matrix"
    if scan.format is ImageFormat.DICOM:
        header = getattr(scan, "dataset", None)
        modality = str(header.get("Modality", "") or "").strip().upper() if header is not None else ""
        if modality != "MR":
            what = f"a {modality} image" if modality else "a DICOM image without a modality"
            return f"{name} is {what}; {assumes} and makes a blurred image worse: leave it off"
        grid = acquired_grid(header, lambda: scan.frames)
    elif scan.format is ImageFormat.NIFTI:
        grid = acquired_grid(None, lambda: scan.frames)
    else:
        return f"{name} is a {scan.format.value.upper()} image; {assumes}: leave it off unless it is an MR slice"
    if not grid.reduces:
        return None
    return (
        f"{name} is stored at {float(grid.factor):.3g} pixels per acquired sample ({grid.source}): "
        "--data-consistency keeps its k-space above the acquired matrix empty, so the output gains nothing there; "
        "upscale an image stored at its acquired matrix, or leave --data-consistency off"
    )


@dataclass
class Batch:
    """A folder run: every item gets a report row; see :meth:`run`."""

    up: Upscaler
    job: Job
    output: Path
    settings: dict[str, str]
    verbosity: Verbosity
    overwrite: bool
    inputs: InputSet
    journal: Journal
    guard: SignalGuard
    rows: list[dict[str, object]] = field(default_factory=list)
    _written: set[str] = field(default_factory=set)

    def skip(self, reasons: Mapping[Path, str]) -> None:
        """Report files left out before the run (``--select``) as ``skipped`` with the reason."""
        for source, reason in reasons.items():
            self.rows.append(_row(source, None, "skipped", reason, 0.0))
            self.say(f"{PROG}: skipped {source}: {reason}", Verbosity.VERBOSE)

    def say(self, text: str, level: Verbosity = Verbosity.NORMAL) -> None:
        if self.verbosity >= level:
            _write_line(text, sys.stderr)

    def process(self, item: Item, window: object | None = None) -> tuple[str, Path | None, str]:
        """Handle one file; returns ``(status, output, reason)`` with status ``written`` or ``kept``.

        Raises:
            MetaSRError: the file cannot be processed (the caller records the verdict).
        """
        check_regular_file(item.source)
        source_sha = sha256_file(item.source)
        settings = self.settings if window is None else self.settings | {"window": _window_text(window)}
        with read_input(item.source, self.job, window) as scan:
            scale, tag, notes = self.job.scale_for(scan)
            self.up.check_scale(scale, allow_extrapolation=self.job.allow_extrapolation)
            out = item.output(tag, scan.default_suffix)
            check_name_length(out)
            self.inputs.check("output", out)
            scan.check_output_name(out)
            key = str(out).casefold()
            if key in self._written:
                raise OutputError(f"output {out} was already written by this run from another input")
            if out.exists() or out.is_symlink():
                check_replaceable(out)
                if not self.overwrite:
                    if self.journal.proves(out, item.source, source_sha, settings):
                        return "kept", out, "written earlier from the same input with the same settings"
                    raise OutputError(
                        f"output {out.name} exists in {out.parent} but does not provably come from this input with "
                        f"these settings; pass --overwrite to replace it or choose another --output"
                    )
            partial = partial_path(out, scan.default_suffix)
            check_name_length(partial)
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"cannot create folder {out.parent}: {e.strerror or type(e).__name__}") from None

            def record_and_move(written: Path) -> Path:
                try:
                    self.journal.record(out, item.source, source_sha, settings, written=written)
                    publish_file(written, out, replace=self.overwrite)  # never over what another run wrote meanwhile
                except BaseException as e:
                    written.unlink(missing_ok=True)  # an unrecorded output could never be resumed: none at all
                    if isinstance(e, OSError) and not isinstance(e, OutputError):
                        raise OutputError(f"cannot write {out}: {e.strerror or type(e).__name__}") from None
                    raise
                return out

            written = write_one(
                self.up, scan, scale, tag, partial, then=record_and_move, guard=self.guard, job=self.job
            )
            self._written.add(key)
            for note in notes + scan.notes:
                self.say(f"{PROG}: note: {one_line(note)}")
        return "written", written, ""

    def run(self, items: list[Item], windows: Mapping[Path, object] | None = None) -> int:
        """Process every item in order; returns the exit code (0, 2 if any file failed, 130/143 if stopped).

        Args:
            items: The planned files.
            windows: Optional stored-value window per input (one per series); files not in it
                are mapped on their own.
        """
        from tqdm import tqdm

        failed = kept = 0
        done: set[Path] = set()
        bar = tqdm(
            items,
            desc=PROG,
            unit="file",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not progress_enabled(self.verbosity),
        )
        try:
            for item in bar:
                self.guard.check()
                start = time.perf_counter()
                try:
                    status, out, reason = self.process(item, (windows or {}).get(item.source))
                except NotAnImageError as e:  # an SR, RT Plan, KOS... in a study: not a failure
                    status, out, reason = "skipped", None, one_line(str(e))
                except MetaSRError as e:
                    status, out, reason = "failed", None, one_line(str(e))
                except Exception as e:  # noqa: BLE001 - one odd file must not end the run; reported in one line
                    status, out, reason = "failed", None, one_line(f"unexpected {type(e).__name__}: {e}")[:500]
                seconds = round(time.perf_counter() - start, 3)
                done.add(item.source)
                self.rows.append(_row(item.source, out, status, reason, seconds))
                if status == "failed":
                    failed += 1
                    _write_line(f"{PROG}: skipped {item.source}: {reason}", sys.stderr, bar)
                elif status == "skipped":
                    self.say(f"{PROG}: skipped {item.source}: {reason}", Verbosity.VERBOSE)
                elif status == "kept":
                    kept += 1
                    self.say(f"{PROG}: kept {out} ({seconds:.2f} s)", Verbosity.VERBOSE)
                else:
                    _write_line(str(out), sys.stdout, bar)
                    self.say(f"{PROG}: wrote {out} ({seconds:.2f} s)", Verbosity.VERBOSE)
                self.guard.check()  # a signal held back during the write stops the run here, verdict recorded
        except (KeyboardInterrupt, Terminated) as e:
            bar.close()
            self.rows.extend(_row(i.source, None, "not run", "interrupted", 0.0) for i in items if i.source not in done)
            print(
                f"{PROG}: {'terminated' if isinstance(e, Terminated) else 'interrupted'} after {len(done)} of "
                f"{len(items)} files; outputs so far are complete, run the same command again to resume",
                file=sys.stderr,
            )
            return exit_code_for(e)
        finally:
            bar.close()
        if kept:
            self.say(
                f"{PROG}: kept {kept} output(s) in {self.output} written earlier from the same inputs with the "
                f"same settings (pass --overwrite to redo them)"
            )
        skipped = sum(1 for row in self.rows if row["status"] == "skipped")
        if skipped:
            self.say(
                f"{PROG}: skipped {skipped} file(s) that are not images or not selected (-v or --report lists them"
                " with the reason)"
            )
        if failed:
            print(
                f"{PROG}: error: {failed} of {len(items)} files could not be processed (listed above); "
                f"the others are in {self.output}",
                file=sys.stderr,
            )
            return 2
        return 0


def series_windows(sources: list[Path], intensity: str) -> dict[Path, IntensityWindow]:
    """One stored-value window per DICOM series among ``sources`` (slices of a series share it).

    Files that are a series of their own (a NIfTI volume, a multi-frame object, a photo) or that
    cannot be read are left out: they are mapped on their own when read (and a bad file fails
    then, in one line, without stopping the others).
    """
    from metasr.scanners import group_series

    return {path: group.window for group in group_series(sources, intensity) if group.window for path in group.paths}


def _window_text(window: object) -> str:
    # a resume record must name the window: the same slice in another series mapping is another output
    from metasr.runtime.derivation import window_text

    return window_text(window)


def _row(source: Path, out: Path | None, status: str, reason: str, seconds: float) -> dict[str, object]:
    return {
        "input": str(source),
        "output": "" if out is None else str(out),
        "status": status,
        "reason": reason,
        "seconds": seconds,
    }


def _write_line(text: str, stream: object, bar: object = None) -> None:
    """One line beside any progress bar (control characters and undecodable bytes of names escaped)."""
    from tqdm import tqdm

    from metasr.core.paths import shown

    text = shown(text, limit=1 << 20)
    if bar is not None and not getattr(bar, "disable", True):
        tqdm.write(text, file=stream)
    else:
        print(text, file=stream, flush=True)  # type: ignore[call-overload]


def finish_report(report: Path | None, rows: list[dict[str, object]]) -> None:
    """Write the report if one was asked for (atomically); a report that cannot be written is an error."""
    if report is not None:
        write_report(report, rows)
