"""Assemble the training / validation / test corpus of the shipped model from installed packages.

Every image comes from a package that installs offline here (nothing is downloaded at run time):
``pydicom-data`` and pydicom's own test files (real MR, CT, CR, US, NM), ``pydeface``'s mean T1
head, the MNI152 2009a template inside the nilearn wheel (read from the wheel file; nilearn is
not imported), nibabel's ``example4d`` EPI, and scikit-image's photographs (fundus and histology
included). Nothing from dipy, nipy or other nibabel data files is used.

Splits are by subject / series, never by slice:

* ``test`` (``test/mr``, ``test/ct``, ``test/nm``): three real single-subject MR scans that no
  training sees (a Siemens head MR 484x484, the 1024x1024 ``MR2`` and the ``example4d`` EPI
  volume), plus a real head CT (CQ500 ``693``)
  and a nuclear-medicine image (``NM1``) for the "never worse than bicubic" checks on other
  modalities. All encodings of these images (JPEG 2000, lossy copies) are excluded everywhere.
* ``val``: the MNI template's axial slab z = 90..117 and the enhanced-MR ``emri_small`` frames
  (checkpoint selection only).
* ``train``: everything else listed below.

Writes ``OUT/{train,val,test}/...`` and ``OUT/corpus.csv`` (split, file, source, sha256); the
csv of train and val is what ships beside the model (``models/<name>/data.csv``).

Usage: ``python scripts/build_corpus.py OUT [--nilearn-wheel PATH]``
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

PHOTOS = (
    "astronaut.png brick.png camera.png cell.png chelsea.png clock_motion.png coffee.png coins.png grass.png "
    "gravel.png hubble_deep_field.jpg ihc.png microaneurysms.png moon.png motorcycle_left.png page.png "
    "retina.jpg rocket.jpg text.png"
).split()
#: pydicom-data files (``data_store/data``) per split; test subjects' other encodings are listed nowhere.
STORE = {
    "train": [
        "explicit_VR-UN.dcm",  # CT, pancreas study
        "eCT_Supplemental.dcm",  # enhanced CT, 2 frames
        "RG1_UNCR.dcm",  # CR
        "RG3_UNCR.dcm",  # CR
        "JPGLosslessP14SV1_1s_1f_8b.dcm",  # US, grey
    ],
    "val": ["emri_small.dcm"],
    "test/mr": ["MR-SIEMENS-DICOM-WithOverlays.dcm", "MR2_UNCR.dcm"],
    "test/ct": ["693_UNCR.dcm"],
    "test/nm": ["JPEG2000_UNC.dcm"],
}
#: pydicom's own test files (``pydicom/data/test_files``).
PYDICOM = {"train": ["CT_small.dcm", "MR_small.dcm", "J2K_pixelrep_mismatch.dcm"]}
MNI_MEMBER = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
SLAB = (90, 118)  # axial slab held out for validation


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _package_dir(module: str) -> Path:
    spec = __import__(module)
    return Path(spec.__file__).parent


def _mni(wheel: Path, out: Path, rows: list) -> None:
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "mni.nii.gz"
        src.write_bytes(z.read(MNI_MEMBER))
        img = nib.load(str(src))
        data = np.asarray(img.dataobj)
        lo, hi = SLAB
        parts = {
            ("train", "mni_below.nii.gz"): (0, lo),
            ("train", "mni_above.nii.gz"): (hi, data.shape[2]),
            ("val", "mni_slab.nii.gz"): (lo, hi),
        }
        for (split, name), (z0, z1) in parts.items():
            affine = img.affine.copy()
            affine[:3, 3] = img.affine[:3, :3] @ np.array([0, 0, z0]) + img.affine[:3, 3]
            path = out / split / name
            nib.save(nib.Nifti1Image(data[:, :, z0:z1], affine), str(path))
            rows.append((split, path.relative_to(out).as_posix(), f"nilearn wheel {wheel.name}: {MNI_MEMBER}"))


def _example4d(out: Path, rows: list) -> None:
    src = _package_dir("nibabel") / "tests" / "data" / "example4d.nii.gz"
    img = nib.load(str(src))
    path = out / "test" / "mr" / "example4d_vol0.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine, img.header), str(path))
    rows.append(("test/mr", path.relative_to(out).as_posix(), "nibabel tests/data/example4d.nii.gz, volume 0"))


def build(out: Path, wheel: Path) -> list[tuple[str, str, str, str]]:
    for split in ("train", "val", "test/mr", "test/ct", "test/nm"):
        (out / split).mkdir(parents=True, exist_ok=True)
    rows: list = []
    store = _package_dir("data_store") / "data"
    for split, names in STORE.items():
        for name in names:
            shutil.copy2(store / name, out / split / name)
            rows.append((split, f"{split}/{name}", f"pydicom-data data_store/data/{name}"))
    tests = _package_dir("pydicom") / "data" / "test_files"
    for split, names in PYDICOM.items():
        for name in names:
            shutil.copy2(tests / name, out / split / name)
            rows.append((split, f"{split}/{name}", f"pydicom data/test_files/{name}"))
    photos = _package_dir("skimage") / "data"
    (out / "train" / "photos").mkdir(exist_ok=True)
    for name in PHOTOS:
        shutil.copy2(photos / name, out / "train" / "photos" / name)
        rows.append(("train", f"train/photos/{name}", f"scikit-image data/{name}"))
    head = _package_dir("pydeface") / "data" / "mean_reg2mean.nii.gz"
    shutil.copy2(head, out / "train" / "pydeface_mean_head.nii.gz")
    rows.append(("train", "train/pydeface_mean_head.nii.gz", "pydeface data/mean_reg2mean.nii.gz"))
    _mni(wheel, out, rows)
    _example4d(out, rows)
    table = [(split, name, source, _sha(out / name)) for split, name, source in rows]
    with open(out / "corpus.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "file", "source", "sha256"])
        writer.writerows(sorted(table))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--nilearn-wheel", type=Path, required=True, help="nilearn-*.whl (pip download nilearn)")
    args = parser.parse_args(argv)
    table = build(args.out, args.nilearn_wheel)
    counts = {s: sum(1 for row in table if row[0].startswith(s)) for s in ("train", "val", "test")}
    print(f"wrote {args.out}: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
