"""Publishing an export atomically: refuse to clobber another model's export, stage the files in a
temporary folder on the same file system, then move them into place with ``manifest.json`` last."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from metasr.core.errors import ModelError, OutputError
from metasr.core.manifest import MANIFEST_NAME, read_manifest, sha256_file
from metasr.core.paths import check_resolvable

__all__ = ["check_target", "make_temp_dir", "publish"]


def check_target(out_dir: Path, ckpt_path: Path, ckpt_sha: str, names: list[str], force: bool) -> dict | None:
    """Refuse to replace another model's export without ``force``; return the old manifest if any."""
    check_resolvable(out_dir, "--out")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} exists and is not a folder; choose a folder for the export")
    for name in names + [MANIFEST_NAME]:
        if (out_dir / name).resolve() == ckpt_path.resolve():
            raise OutputError(
                f"the export would overwrite the checkpoint {ckpt_path}; rename the checkpoint or choose another --out"
            )
    if not out_dir.is_dir():
        return None
    old = None
    if (out_dir / MANIFEST_NAME).exists():
        try:
            old = read_manifest(out_dir)
        except ModelError as e:
            if not force:
                raise OutputError(
                    f"{out_dir} holds a {MANIFEST_NAME} that is not a valid metasr export ({e}); "
                    f"pass --force to replace it"
                ) from e
            return None
        old_sha = (old.get("checkpoint") or {}).get("sha256")
        old_name = (old.get("checkpoint") or {}).get("file")
        if (
            old_sha != ckpt_sha
            and not force
            and old_name == ckpt_path.name
            and out_dir.resolve() == ckpt_path.parent.resolve()
        ):
            raise OutputError(
                f"{out_dir} holds the export of an earlier version of {ckpt_path.name} "
                f"(sha256 {str(old_sha)[:12]}...); pass --force to re-export it"
            )
        if old_sha != ckpt_sha and not force:
            raise OutputError(
                f"{out_dir} already holds the export of another checkpoint "
                f"({(old.get('checkpoint') or {}).get('file')}, sha256 {str(old_sha)[:12]}...); "
                f"pass --force to replace it, or choose another --out"
            )
        return old
    clash = [n for n in names if (out_dir / n).exists()]
    if clash and not force:
        raise OutputError(
            f"{out_dir} already has {', '.join(clash)} without a {MANIFEST_NAME} (unknown origin); "
            f"pass --force to replace them, or choose another --out"
        )
    return None


def make_temp_dir(out_dir: Path) -> Path:
    """A temp folder on the same file system as ``out_dir``: beside it, or (if its parent is not
    writable but ``out_dir`` exists) hidden inside it, so the final moves are renames."""
    prefix = f".{out_dir.resolve().name or 'export'}.export-"
    candidates = [out_dir.resolve().parent] + ([out_dir] if out_dir.is_dir() else [])
    error: OSError | None = None
    for parent in candidates:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            return _new_dir(parent, prefix)
        except OSError as e:
            error = e
    raise OutputError(
        f"cannot write the export to {out_dir} ({getattr(error, 'strerror', None) or error}); choose a writable --out"
    ) from error


def _new_dir(parent: Path, prefix: str) -> Path:
    # os.mkdir (not tempfile.mkdtemp, which makes it 0700) so the folder gets the user's umask
    # permissions: when out_dir is new, this folder is renamed into it as is
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary folder in {parent}")


def publish(tmp: Path, out_dir: Path, names: list[str], old: dict | None, keep: Path) -> None:
    """Move the verified files from ``tmp`` into ``out_dir``, manifest last."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)  # the whole export appears at once
        return
    # drop the old manifest first so a half-replaced folder never passes for a valid export
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for path in sorted(tmp.iterdir()):  # the listed files plus build caches (trt_timing.cache)
        if path.name != MANIFEST_NAME:
            os.replace(path, out_dir / path.name)
    if old is not None:  # files of the previous export that this one does not have (e.g. engines)
        for name, sha in old.get("files", {}).items():
            stale = out_dir / name
            if name not in names and name != MANIFEST_NAME and stale.resolve() != keep.resolve():
                _remove_if_written_by_export(stale, sha)
    os.replace(tmp / MANIFEST_NAME, out_dir / MANIFEST_NAME)
    shutil.rmtree(tmp, ignore_errors=True)


#: What an export writes (graphs, EP-context models, TensorRT engines): the only files it ever removes.
EXPORT_SUFFIXES = (".onnx", ".engine")


def _remove_if_written_by_export(path: Path, sha: str) -> None:
    """Remove a previous export's file, only if it is one an export writes and is unchanged since.

    A manifest can list anything (an edited one may list ``last.pt``); a checkpoint, a file the
    user put there or a file changed since the export is never deleted.
    """
    if path.suffix not in EXPORT_SUFFIXES or path.is_symlink() or not path.is_file():
        return
    try:
        if sha256_file(path) != sha:
            return
        path.unlink()
    except OSError:
        pass
