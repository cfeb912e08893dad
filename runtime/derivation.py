"""What a derived image records about how it was made: one :class:`~metasr.scanners.DerivationInfo`
per output, built here from the model, the scale and the run's options.

Every setting that changes the derived pixels goes into it (the scale, the model id, the grid,
the precision that really runs; the intensity window is read from the image itself by the
writer), so the DICOM writer derives new instance and series UIDs when any of them changes. Tile
size, threads, the upscale method and the device at fp32 give the same pixels (to float32
rounding) and are left out, so they keep the UIDs.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from metasr.core.scale import Scale
    from metasr.runtime.jobs import Job
    from metasr.runtime.upscaler import Upscaler
    from metasr.scanners import DerivationInfo

__all__ = ["check_series_unchanged", "derivation_info", "model_name", "pixel_settings", "to_center_grid", "window_text"]


def model_name(up: Upscaler) -> str:
    """The model's name from its manifest (``name``), else its export folder's name."""
    name = up.manifest.get("name") if isinstance(getattr(up, "manifest", None), dict) else None
    return str(name).strip() if isinstance(name, str) and name.strip() else str(up.model_name)


def pixel_settings(up: Upscaler) -> tuple[tuple[str, str], ...]:
    """Runtime settings that change pixels: the precision that runs (fp32 on the CPU whatever was
    asked), below fp32 the device class (fp16 on CUDA and on TensorRT round differently), and the
    self-ensemble and k-space data consistency when they are on. At fp32 every device gives the
    same pixels to float32 rounding, so the device is left out."""
    found = up.pixel_settings() if callable(getattr(up, "pixel_settings", None)) else {}
    precision = getattr(up, "precision", None)
    settings = {"precision": str(found.get("precision") or getattr(precision, "value", precision or "fp32"))}
    if settings["precision"] != "fp32" and found.get("device"):
        settings["device"] = str(found["device"])
    for name in ("ensemble", "data-consistency"):
        if found.get(name):
            settings[name] = str(found[name])
    return tuple(sorted(settings.items()))


def derivation_info(up: Upscaler, scale: Scale, tag: str, job: Job | None = None) -> DerivationInfo:
    """The provenance of one output made by ``up`` at ``scale`` with ``job``'s options."""
    from metasr import __version__
    from metasr.scanners import DerivationInfo

    extra = {}
    if job is not None:
        extra = {"grid": job.grid, "compress": job.compress, "created": job.started}
    return DerivationInfo(
        scale=tag.removeprefix("sr"),
        model_id=up.model_id,
        software_version=__version__,
        model_name=model_name(up),
        exact_scale=scale.value,
        pixel_settings=pixel_settings(up),
        **extra,
    )


def check_series_unchanged(
    records: Mapping[str, dict], settings: Mapping[str, str], windows: Mapping[Path, object], output: Path
) -> None:
    """Refuse a rerun into ``output`` in which a series would be mapped with another window than before.

    A series must stay one series processed one way. When slices were added to (or changed in) a
    series since its outputs were written, its window changes: writing only the new slices would
    put two mappings into one derived series, and keeping the old outputs would mix them too.

    Args:
        records: The resume journal's records (output name -> record with ``input`` and ``settings``).
        settings: This run's settings (without the window).
        windows: This run's window per input file (from the series grouping).
        output: The output folder (for the message).

    Raises:
        OutputError: one line naming the series' folder, the old and the new window and what to do.
    """
    from metasr.core.errors import OutputError

    by_input: dict[str, list[dict]] = {}
    for rec in records.values():
        if isinstance(rec, dict) and isinstance(rec.get("settings"), dict):
            by_input.setdefault(str(rec.get("input")), []).append(rec)
    base = dict(settings)
    for path, window in windows.items():
        now = window_text(window)
        for rec in by_input.get(str(Path(path).resolve()), []):
            old = dict(rec["settings"])
            before = old.pop("window", None)
            if before is not None and before != now and old == base:
                members = sum(1 for w in windows.values() if w is window)
                raise OutputError(
                    f"the series of {path} ({members} files now) was written to {output} with intensity window {before}"
                    f" and now gives {now} (slices were added, removed or changed); pass --overwrite to reprocess the"
                    " whole series, or choose another --output"
                )


def window_text(window: object) -> str:
    """How a window is named in the resume journal (one series mapping, one text)."""
    return f"{getattr(window, 'low', window)!r}..{getattr(window, 'high', '')!r}"


def to_center_grid(sr: np.ndarray, lr_size: tuple[int, int], scale: Fraction) -> np.ndarray:
    """Super-resolved frames on the network's grid, resampled onto the ``center`` grid.

    The network's output pixel ``i`` shows input coordinate ``(i + 0.5) / r - 0.5`` (outer corner
    kept). ``--grid center`` (MONAI, ITK) wants output pixel ``j`` at ``j (n - 1) / (N - 1)``: the
    first and last input pixel centres kept. That is network coordinate ``r (n - 1) / (N - 1) j +
    (r - 1) / 2``, sampled bicubically (a sub-pixel shift, at most half an input pixel at the edges).
    """
    from metasr.scanners.base import GridMap, resample_on_map

    r = Fraction(scale)
    _, height, width = sr.shape
    axes = []
    for n, big in zip(lr_size, (height, width)):
        a = Fraction(n - 1, big - 1) if big > 1 and n > 1 else 1 / r
        axes.append((r * a, (r - 1) / 2))
    gmap = GridMap(axes[0], axes[1])
    out = np.stack([resample_on_map(np.ascontiguousarray(f), height, width, gmap) for f in sr])
    return np.clip(out, 0.0, 1.0).astype(np.float32)
