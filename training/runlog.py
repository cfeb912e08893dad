"""The run folder of ``metasr-train``: checks before a run, then ``config.json``, ``log.csv``, ``tb/``, progress."""

from __future__ import annotations

import csv
import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from metasr.core.atomic import atomic_write_text, check_writable_folder
from metasr.core.errors import OutputError
from metasr.core.paths import check_resolvable
from metasr.training.losses import PIXEL_LOSSES

__all__ = ["RUN_FILES", "config_dict", "check_run_folder", "earlier_snapshots", "RunLog"]

log = logging.getLogger("metasr.training")

#: Files a run writes into its folder; an earlier run's are never replaced without --resume/--overwrite.
RUN_FILES = ("last.pt", "best.pt", "log.csv")
#: Loss terms a training step may log (the pixel term under its own name).
_TERMS = (*PIXEL_LOSSES, "teacher", "adversarial", "perceptual")
_CSV_FIELDS = ["step", "seconds", "scale", "loss", *_TERMS, "d_loss", "lr", "val_psnr"]


def config_dict(cfg: Any) -> dict[str, Any]:
    """A run configuration (dataclass) as plain JSON-friendly data."""
    out = {}
    for k, v in vars(cfg).items():
        if isinstance(v, (Path, Enum)):
            v = v.value if isinstance(v, Enum) else str(v)
        elif isinstance(v, (tuple, list)):
            v = [str(x) for x in v]
        out[k] = v
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def check_run_folder(cfg: Any) -> None:
    """Check the run folder before any work: writable, not an input, no earlier run lost.

    Raises:
        OutputError: one line naming the problem and the fix.
    """
    out = Path(cfg.out_dir)
    check_resolvable(out, "--out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder for the run (last.pt, best.pt, log.csv)")
    for spec in [*cfg.data, *cfg.val]:
        data_path = Path(str(spec).partition(":")[2]).expanduser()
        if _same(out, data_path):
            raise OutputError(f"--out {out} is the data folder of {spec}; give a separate run folder")
    if cfg.init is not None and not cfg.resume:
        for name in ("last.pt", "best.pt"):
            if _same(Path(cfg.init), out / name):
                raise OutputError(
                    f"--init {cfg.init} is this run's own {name} and would be overwritten; "
                    f"copy it elsewhere or use --resume"
                )
    if cfg.teacher is not None:
        for own in [out / name for name in ("last.pt", "best.pt")] + earlier_snapshots(out):
            if _same(Path(cfg.teacher), own):
                raise OutputError(
                    f"--teacher {cfg.teacher} is this run's own {own.relative_to(out)} and would change as the run "
                    f"goes on; copy it elsewhere and pass the copy"
                )
    if out.is_dir() and not cfg.resume and not cfg.overwrite:
        earlier = [name for name in RUN_FILES if (out / name).exists()]
        if earlier_snapshots(out):
            earlier.append("snapshots/")
        if earlier:
            raise OutputError(
                f"run folder {out} already holds {', '.join(earlier)} of an earlier run; pass --resume to continue it, "
                f"--overwrite to replace it, or choose a new --out"
            )
    existing = out
    while not existing.exists():
        existing = existing.parent
    check_writable_folder(existing)


def earlier_snapshots(out: Path) -> list[Path]:
    """The weight snapshots (``--snapshot-every``) that a run left in ``out``."""
    folder = out / "snapshots"
    return sorted(folder.glob("step-*.pt")) if folder.is_dir() else []


def _existing_header(path: Path) -> list[str] | None:
    """The column names of an existing ``log.csv``, or None when it has no usable header."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    return header if header and "step" in header else None


class RunLog:
    """What rank 0 writes while training: ``config.json``, ``log.csv``, TensorBoard, a progress bar."""

    def __init__(self, out_dir: Path, cfg: Any, step: int, is_main: bool = True) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:  # --overwrite: the replaced run's snapshots must not be averaged with this one's
            for old in earlier_snapshots(out_dir):
                old.unlink()
        self.cfg = cfg
        self.bar = None
        atomic_write_text(out_dir / "config.json", json.dumps(config_dict(cfg), indent=2) + "\n")
        path = out_dir / "log.csv"
        new = not (cfg.resume and path.is_file())
        # A resumed run appends under the header its log already has (a log begun before a column
        # was added keeps its columns; the total stays in "loss"), so no row is shifted.
        fields = _CSV_FIELDS if new else (_existing_header(path) or _CSV_FIELDS)
        self._f = open(path, "w" if new else "a", newline="")
        self._csv = csv.DictWriter(self._f, fieldnames=fields, extrasaction="ignore")
        if new:
            self._csv.writeheader()
        self.writer = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=step if cfg.resume else None)

    def open_progress(self, total: int, initial: int, desc: str) -> None:
        if self.cfg.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)

    def step(self, row: dict[str, Any], gan: bool) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", scale=row["scale"], refresh=False)
            self.bar.update(1)
        if self.writer is not None:
            step = row["step"]
            self.writer.add_scalar("train/loss", row["loss"], step)
            for k in _TERMS:
                if k in row:
                    self.writer.add_scalar(f"train/{k}", row[k], step)
            self.writer.add_scalar("train/lr", row["lr"], step)
            if gan:
                self.writer.add_scalar("train/d_loss", row["d_loss"], step)

    def validation(self, step: int, metrics: dict[str, float], best: float | None) -> None:
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"val/{k}", v, step)
        text = f"step {step}: validation PSNR {metrics['psnr']:.3f} dB (best {best:.3f})"
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            log.debug("%s", text)

    def row(self, row: dict[str, Any]) -> None:
        self._csv.writerow(row)
        self._f.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self._f.close()
        if self.writer is not None:
            self.writer.close()
