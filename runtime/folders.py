"""Where ``metasr-run`` reads and writes: the inputs (files and folder trees), the output names,
the checks that nothing written is an input or another output, the resume journal and the report.

Output names. ``frame.dcm`` scaled by 1.8 becomes ``frame_sr1.8.dcm`` (fractions as ``7-3``,
``--size`` as ``512x384``). A folder's tree is kept under the output folder. Files whose outputs
would share a name in one folder (the same name apart from the suffix or letter case, e.g.
``a.dcm``, ``a.DCM``, ``a``, ``a.ima``) are numbered in sorted name order: the first keeps
``a``, the next get ``a-2``, ``a-3`` (skipping names another input already has), so every input
gets its own output and a rerun of the same folder gives the same names.

Resume. Each output is written under a hidden partial name, a line is appended to
``.metasr-run.jsonl`` in the output folder (input path and sha256, the settings: scale asked,
axis, intensity, model id, software version; the output's name and sha256), and only then is the
output moved to its name, so even a killed run never leaves an output without its proof. A later
run keeps an existing output only when such a line proves it came from the same input bytes with
the same settings and the output is unchanged; any other existing output is refused (or redone
with ``--overwrite``), never silently kept.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from metasr.core.atomic import atomic_write_bytes, atomic_write_text, file_identity
from metasr.core.errors import InputError, OutputError
from metasr.core.manifest import sha256_file

__all__ = [
    "JOURNAL_NAME",
    "REPORT_FIELDS",
    "check_report_path",
    "output_stem",
    "InputSet",
    "Item",
    "Journal",
    "default_output_name",
    "find_images",
    "plan_items",
    "write_report",
]

JOURNAL_NAME = ".metasr-run.jsonl"
#: Folder index files that start like DICOM but hold no image.
_NOT_IMAGES = frozenset({"dicomdir"})
REPORT_FIELDS = ("input", "output", "status", "reason", "seconds")


def output_stem(path: Path) -> str:
    """``frame.dcm`` -> ``frame``, ``vol.nii.gz`` -> ``vol``, ``IM0001`` -> ``IM0001``."""
    name = path.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return path.stem if path.suffix else name


def partial_path(out: Path, suffix: str) -> Path:
    """The hidden name an output is written under before it is recorded (same suffix, same bytes)."""
    base = out.name[: -len(suffix)] if suffix and out.name.endswith(suffix) else out.name
    return out.with_name(f".{base}.partial{suffix}")


def default_output_name(source: Path | str, tag: str, suffix: str, stem: str | None = None) -> str:
    """``frame.dcm`` + ``sr1.8`` -> ``frame_sr1.8.dcm`` (fractions as ``7-3``)."""
    return f"{stem if stem is not None else output_stem(Path(source))}_{tag.replace('/', '-')}{suffix}"


def _is_candidate(path: Path) -> bool:
    """An image file by the scanners' one detector (suffix, or DICOM content with or without a
    preamble), except folder index files (``DICOMDIR``)."""
    from metasr.scanners.reader import is_image_file

    return path.name.lower() not in _NOT_IMAGES and is_image_file(path)


def find_images(folder: Path, skip: Sequence[Path] = ()) -> Iterator[Path]:
    """Image files under ``folder`` (series subfolders included), in sorted order.

    Hidden files and folders are skipped, symbolic links to folders are not followed (no loops),
    and folders in ``skip`` (e.g. the output folder inside the input) are not entered. Files
    without a known suffix are listed when they start like a DICOM file (``IM0001``).
    """
    skip_ids = {i for i in (file_identity(p) for p in skip) if i is not None}
    unlisted: list[Path] = []
    for top, dirs, files in os.walk(folder, followlinks=False, onerror=lambda e: unlisted.append(Path(e.filename))):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and file_identity(Path(top, d)) not in skip_ids)
        for name in sorted(files):
            path = Path(top, name)
            if _is_candidate(path) or _too_long(path):
                yield path
    # a folder that cannot be listed (a path over PATH_MAX, no permission) is never skipped silently:
    # it is listed, so it gets a "failed" verdict that says why
    yield from (p for p in unlisted if p != Path(folder))


def _too_long(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ENAMETOOLONG
    return False


@dataclass(frozen=True)
class Item:
    """One input file and where its output goes: ``out_dir / (stem + "_" + tag + suffix)``."""

    source: Path
    out_dir: Path
    stem: str

    def output(self, tag: str, suffix: str) -> Path:
        return self.out_dir / default_output_name(self.source, tag, suffix, stem=self.stem)


def _unique_stems(entries: list[tuple[Path, Path, Path]]) -> list[Item]:
    """Give each ``(source, rel_dir, out_dir)`` a stem no other entry in its folder shares (case-insensitively)."""
    groups: dict[tuple[str, str], list[tuple[Path, Path, Path]]] = {}
    for entry in entries:
        source, rel, _ = entry
        groups.setdefault((rel.as_posix().casefold(), output_stem(source).casefold()), []).append(entry)
    taken = set(groups)
    stems: dict[Path, str] = {}
    for (folder_key, _), members in sorted(groups.items()):
        members.sort(key=lambda e: e[0].name)
        stems[members[0][0]] = output_stem(members[0][0])
        k = 2
        for source, _, _ in members[1:]:
            base = output_stem(source)
            while (folder_key, f"{base}-{k}".casefold()) in taken:
                k += 1
            taken.add((folder_key, f"{base}-{k}".casefold()))
            stems[source] = f"{base}-{k}"
            k += 1
    return [Item(source, out_dir, stems[source]) for source, _, out_dir in entries]


def plan_items(inputs: Sequence[Path], output: Path) -> list[Item]:
    """Every image under ``inputs`` with its output folder below ``output`` and a unique stem.

    One folder input: its tree goes directly under ``output``. Several inputs: files go into
    ``output``, each folder into ``output/<folder name>/``.

    Raises:
        InputError: a folder input that holds no images.
    """
    entries: list[tuple[Path, Path, Path]] = []
    seen: set[tuple[int, int]] = set()
    several = len(inputs) > 1
    for given in inputs:
        if not given.is_dir():
            ident = file_identity(given)
            if ident not in seen:
                seen.add(ident)
                entries.append((given, Path(), output))
            continue
        prefix = Path(given.resolve().name) if several else Path()
        found = 0
        for path in find_images(given, skip=(output,)):
            found += 1  # a folder whose images another input already names still holds images
            ident = file_identity(path)
            if ident in seen:
                continue  # the same file reached twice (a link, or named by two inputs)
            seen.add(ident)
            rel = prefix / path.parent.relative_to(given)
            entries.append((path, rel, output / rel))
        if not found:
            raise InputError(
                f"folder {given} holds no supported images (DICOM, NIfTI, PNG, TIFF, JPEG; series subfolders "
                f"included); give a folder of images"
            )
    return _unique_stems(entries)


class InputSet:
    """Every input, to refuse any output that is one of them (through links and other spellings)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.ids: dict[tuple[int, int], Path] = {}
        self.keys: dict[str, Path] = {}
        for p in paths:
            ident = file_identity(p)
            if ident is not None:
                self.ids[ident] = p
            self.keys[os.path.realpath(p)] = p

    def check(self, role: str, path: Path) -> None:
        """Raises :class:`OutputError` if ``path`` is one of the inputs."""
        ident = file_identity(path)
        src = (self.ids.get(ident) if ident is not None else None) or self.keys.get(os.path.realpath(path))
        if src is not None:
            raise OutputError(
                f"{role} {path} is the input file {src}; choose another path (inputs are never overwritten)"
            )


class Journal:
    """The resume record of one output folder (one JSON line per output written)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL_NAME
        self.records: dict[str, dict] = {}
        #: Lines that prove nothing and were skipped (cut short by a crash, edited, hostile).
        self.skipped = 0
        try:
            data = self.path.read_bytes()
        except OSError:
            data = b""
        #: Whether the file ends mid-line (a crash cut the last record): the next record starts a fresh line.
        self._torn = bool(data) and not data.endswith(b"\n")
        for line in data.decode("utf-8", errors="replace").splitlines():
            rec = _parse_record(line)
            if rec is None:
                self.skipped += line.strip() != ""
                continue
            self.records[rec["output"]] = rec

    def _key(self, out: Path) -> str:
        return out.relative_to(self.path.parent).as_posix()

    def proves(self, out: Path, source: Path, source_sha: str, settings: dict[str, str]) -> bool:
        """Whether ``out`` was written by this journal from these input bytes with these settings, unchanged since."""
        rec = self.records.get(self._key(out))
        if rec is None or rec.get("input") != str(source.resolve()) or rec.get("input_sha256") != source_sha:
            return False
        if rec.get("settings") != settings:
            return False
        try:
            return rec.get("output_sha256") == sha256_file(out)
        except OSError:
            return False

    def record(
        self, out: Path, source: Path, source_sha: str, settings: dict[str, str], written: Path | None = None
    ) -> None:
        """Append the proof for ``out`` (one line, flushed to disk).

        Args:
            out: The output's final path.
            source, source_sha, settings: What it was made from.
            written: Where its bytes are now, if not yet at ``out`` (they are moved there after
                the line is on disk, so an output never exists without its proof).
        """
        rec = {
            "output": self._key(out),
            "input": str(source.resolve()),
            "input_sha256": source_sha,
            "settings": settings,
            "output_sha256": sha256_file(written or out),
        }
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(("\n" if self._torn else "") + json.dumps(rec, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:
            raise OutputError(f"cannot record {out.name} in {self.path}: {e.strerror or type(e).__name__}") from None
        self._torn = False
        self.records[rec["output"]] = rec


#: Longest journal line read (a record is a few hundred bytes; longer lines are not records).
_MAX_RECORD = 1 << 16
_RECORD_FIELDS = ("output", "input", "input_sha256", "output_sha256")


def _parse_record(line: str) -> dict | None:
    """One journal line as a record, or ``None`` when it proves nothing (torn, edited, hostile)."""
    if not line.strip() or len(line) > _MAX_RECORD:
        return None
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str) for k in _RECORD_FIELDS):
        return None
    if not isinstance(rec.get("settings"), dict):
        return None
    return rec


def check_report_path(report: Path) -> None:
    """``--report`` must end in ``.csv`` or ``.json`` and not name a folder."""
    if report.suffix.lower() not in (".csv", ".json"):
        raise InputError(f"--report {report} must end in .csv or .json (the suffix chooses the format)")
    if report.is_dir():
        raise OutputError(f"--report {report} is a folder; give a file name ending in .csv or .json")


def write_report(report: Path, rows: list[dict[str, object]]) -> None:
    """Write the per-file report atomically: CSV or JSON by suffix (input, output, status, reason, seconds)."""
    if report.suffix.lower() == ".json":
        counts: dict[str, int] = {}
        for row in rows:
            counts[str(row["status"])] = counts.get(str(row["status"]), 0) + 1
        atomic_write_text(report, json.dumps({"files": rows, "counts": counts}, indent=2) + "\n")
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(report, buf.getvalue().encode("utf-8", "backslashreplace"))  # undecodable names escaped
