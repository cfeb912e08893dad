"""Adversarial files for metasr.scanners, table-driven.

Every case is a file built in a temporary folder. A refused case must raise one
:class:`InputError` line matching its pattern; an accepted case must read correctly. Either way
nothing is written beside the input and the input stays byte-identical.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from _scanners_data import ct_phantom, write_ct
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import JPEGBaseline8Bit

from metasr.core.errors import InputError, OutputError
from metasr.scanners import read_image

# ---- builders -------------------------------------------------------------------------------


def _ct(tmp: Path, **attrs) -> Path:
    return write_ct(tmp / "x.dcm", ct_phantom(16), **attrs)


def _edit(tmp: Path, change) -> Path:
    """A CT slice whose dataset ``change`` alters (raw values allowed), saved without validation."""
    path = _ct(tmp)
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def _raw_element(ds, tag: int, vr: str, text: bytes) -> None:
    """Put undecoded bytes in an element, as a damaged file would hold them."""
    from pydicom.dataelem import RawDataElement

    ds._dict[pydicom.tag.Tag(tag)] = RawDataElement(pydicom.tag.Tag(tag), vr, len(text), text, 0, False, True)


def _spacing(text: bytes):
    return lambda tmp: _edit(tmp, lambda ds: _raw_element(ds, 0x00280030, "DS", text))


def _position(text: bytes):
    return lambda tmp: _edit(tmp, lambda ds: _raw_element(ds, 0x00200032, "DS", text))


def _orientation(text: bytes):
    return lambda tmp: _edit(tmp, lambda ds: _raw_element(ds, 0x00200037, "DS", text))


def _raw(tag: int, vr: str, text: bytes):
    return lambda tmp: _edit(tmp, lambda ds: _raw_element(ds, tag, vr, text))


def _set(**attrs):
    def change(ds):
        for k, v in attrs.items():
            setattr(ds, k, v)

    return lambda tmp: _edit(tmp, change)


def _pixels(transform):
    def change(ds):
        ds.PixelData = transform(ds.PixelData)

    return lambda tmp: _edit(tmp, change)


def _shared_spacing(text: bytes):
    def change(ds):
        measures = Dataset()
        _raw_element(measures, 0x00280030, "DS", text)
        shared = Dataset()
        shared.PixelMeasuresSequence = Sequence([measures])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])

    return lambda tmp: _edit(tmp, change)


def _nifti(tmp: Path, *, zooms=(0.9, 0.9, 3.0), shape=(12, 10, 3), dtype=np.int16, name="v.nii", edit=None) -> Path:
    data = (np.arange(np.prod(shape)) % 200).reshape(shape).astype(dtype)
    image = nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0]))
    header = image.header
    header["pixdim"][1 : 1 + len(zooms)] = zooms
    if edit is not None:
        edit(header)
    raw = header.binaryblock + b"\x00" * 4 + data.tobytes(order="F")
    path = tmp / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    return path


def _pixdim(value: float):
    return lambda tmp: _nifti(tmp, zooms=(value, 0.9, 3.0))


def _nifti_claims(shape, dtype=np.float64):
    """A tiny .nii whose header claims a huge volume (608 bytes on disk)."""

    def build(tmp):
        header = nib.Nifti1Header()
        header.set_data_dtype(dtype)
        header.set_data_shape(shape)
        path = tmp / "huge.nii"
        path.write_bytes(header.binaryblock + b"\x00" * (608 - 348))
        return path

    return build


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width, height, depth, colour, rows: bytes, palette: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr) + (_chunk(b"PLTE", palette) if palette else b"")
    return b"\x89PNG\r\n\x1a\n" + chunks + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def _write(name: str, data: bytes):
    def build(tmp):
        (tmp / name).write_bytes(data)
        return tmp / name

    return build


def _tiff(samples: int, width=8, height=6, orientation: int | None = None, dtype=np.uint8) -> bytes:
    """A baseline uncompressed little-endian TIFF (contiguous samples)."""
    itemsize = np.dtype(dtype).itemsize
    pixels = (np.arange(width * height * samples) % 250).astype(dtype).tobytes()
    fmt = {"u": 1, "i": 2, "f": 3}[np.dtype(dtype).kind]
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 1, 8 * itemsize),
        (259, 3, 1, 1),
        (262, 3, 1, 1 if samples < 3 else 2),
        (273, 4, 1, 0),
        (277, 3, 1, samples),
        (278, 3, 1, height),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
        (339, 3, 1, fmt),
    ]
    if samples in (2, 4):
        entries.append((338, 3, 1, 2))
    if orientation is not None:
        entries.append((274, 3, 1, orientation))
    entries.sort()
    if samples > 1:  # BitsPerSample and SampleFormat need one value per sample
        extra = struct.pack(f"<{samples}H", *[8 * itemsize] * samples) + struct.pack(f"<{samples}H", *[fmt] * samples)
    else:
        extra = b""
    ifd_size = 2 + 12 * len(entries) + 4
    extra_at = 8 + ifd_size
    pixels_at = extra_at + len(extra)
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = pixels_at
        if samples > 1 and tag in (258, 339):
            count, value = samples, extra_at + (0 if tag == 258 else 2 * samples)
            out += struct.pack("<HHII", tag, typ, count, value)
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    return bytes(out + struct.pack("<I", 0) + extra + pixels)


def _jpeg_with_orientation(orientation: int) -> bytes:
    img = np.zeros((24, 40), np.uint8)
    img[2:8, 3:12] = 255  # a mark near the top-left corner
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 274, 3, 1, orientation, 0)
    tiff += struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    data = buf.tobytes()
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def _pixels_as_jpeg(tmp):
    def change(ds):
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + os.urandom(120)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit

    return _edit(tmp, change)


def _fifo(tmp):
    os.mkfifo(tmp / "pipe.dcm")
    return tmp / "pipe.dcm"


def _link(target: str, name="dev.dcm"):
    def build(tmp):
        (tmp / name).symlink_to(target)
        return tmp / name

    return build


def _loop(tmp):
    (tmp / "a.dcm").symlink_to(tmp / "b.dcm")
    (tmp / "b.dcm").symlink_to(tmp / "a.dcm")
    return tmp / "a.dcm"


def _dicom_bytes(tmp) -> bytes:
    return _ct(tmp).read_bytes()


# ---- refused --------------------------------------------------------------------------------

REFUSED = {
    # special files and paths
    "FIFO": (_fifo, r"is a FIFO \(named pipe\), not a regular file"),
    "symlink to /dev/zero": (_link("/dev/zero"), "is a device, not a regular file"),
    "symlink loop": (_loop, "cannot read input"),
    "dangling symlink": (_link("/nonexistent/x.dcm"), "does not exist"),
    "folder named like a file": (lambda t: (t / "d.dcm").mkdir() or t / "d.dcm", "is a folder"),
    # DICOM numbers
    "PixelSpacing nan": (
        _spacing(b"nan\\nan "),
        r"PixelSpacing \(0028,0030\) is 'nan\\\\nan'; it must be two positive",
    ),
    "PixelSpacing inf": (_spacing(b"inf\\1.0 "), "PixelSpacing .* two positive finite numbers"),
    "PixelSpacing negative": (_spacing(b"-0.9\\-0.9 "), r"is '-0.9\\\\-0.9'; it must be two positive finite"),
    "PixelSpacing zero": (_spacing(b"0\\0 "), "PixelSpacing .* positive finite"),
    "PixelSpacing text": (_spacing(b"abc\\def "), "PixelSpacing .* positive finite"),
    "PixelSpacing one value": (_spacing(b"0.5 "), "PixelSpacing .* two positive"),
    "PixelSpacing three values": (_spacing(b"0.5\\0.5\\1 "), "PixelSpacing .* two positive"),
    "ImagerPixelSpacing negative": (_set(ImagerPixelSpacing=[-1.0, 1.0]), r"ImagerPixelSpacing \(0018,1164\)"),
    "shared PixelMeasures nan": (_shared_spacing(b"nan\\0.5 "), "PixelSpacing .* positive finite"),
    "ImagePositionPatient nan": (_position(b"nan\\0\\0 "), r"ImagePositionPatient \(0020,0032\) .* three finite"),
    "ImagePositionPatient two values": (_position(b"1\\2 "), "ImagePositionPatient .* three finite"),
    "ImageOrientationPatient zero": (_orientation(b"0\\0\\0\\0\\1\\0 "), "two non-zero direction vectors"),
    "ImageOrientationPatient inf": (_orientation(b"1\\0\\0\\0\\inf\\0 "), "ImageOrientationPatient .* six finite"),
    # DICOM layout
    "pixel data 2 frames too long": (_pixels(lambda p: p * 3), "holds 1536 bytes, 3 frame.*Number of Frames"),
    "pixel data short": (_pixels(lambda p: p[:100]), "holds 100 bytes but .* needs 512.*truncated"),
    "MONOCHROME2 with 3 samples": (_set(SamplesPerPixel=3), "MONOCHROME2 with Samples per Pixel 3 is inconsistent"),
    "RGB with 1 sample": (_set(PhotometricInterpretation="RGB"), "RGB with Samples per Pixel 1 is inconsistent"),
    "Rows 1": (_set(Rows=1), "at least 2x2"),
    "Rows 65535": (_set(Rows=65535), "at most 16384 per side"),
    "frames x size over the pixel limit": (_set(NumberOfFrames=9000, Rows=256, Columns=256), "at most 536870912"),
    "NumberOfFrames beyond the data": (_set(NumberOfFrames=40), "truncated or its header is wrong"),
    "BitsAllocated 12": (_set(BitsAllocated=12), "12-bit pixels are not supported"),
    "Photometric HSV": (_set(PhotometricInterpretation="HSV"), "HSV is not supported"),
    "no Rows": (lambda t: _edit(t, lambda ds: delattr(ds, "Rows")), "lacks Rows"),
    "JPEG syntax over garbage fragments": (_pixels_as_jpeg, "cannot be decoded|no installed plugin"),
    "preamble then garbage": (
        _write("g.dcm", b"\x00" * 128 + b"DICM" + os.urandom(300)),
        "damaged|truncated|not a|no pixel data",
    ),
    "NumberOfFrames 1.5": (_raw(0x00280008, "IS", b"1.5 "), r"NumberOfFrames \(0028,0008\) is '1.5', not a whole"),
    "NumberOfFrames text": (_raw(0x00280008, "IS", b"1A"), "NumberOfFrames .* not a whole number"),
    "NumberOfFrames negative": (_raw(0x00280008, "IS", b"-5"), "header claims -5 frames"),
    "BitsStored 0": (_raw(0x00280101, "US", b"\x00\x00"), r"Bits Stored \(0028,0101\) is 0 with 16 bits allocated"),
    "BitsStored over BitsAllocated": (_raw(0x00280101, "US", b"\x20\x00"), "Bits Stored .* is 32 .* 1..16"),
    "PixelRepresentation 2": (_raw(0x00280103, "US", b"\x02\x00"), "Pixel Representation .* is 2; it must be 0"),
    "SamplesPerPixel 0": (_raw(0x00280002, "US", b"\x00\x00"), "Samples per Pixel 0 is inconsistent"),
    "SOPClassUID empty": (_raw(0x00080016, "UI", b""), "lacks SOPClassUID"),
    "RT Dose": (_set(SOPClassUID="1.2.840.10008.5.1.4.1.1.481.2"), "RT Dose grid"),
    "Segmentation": (_set(SOPClassUID="1.2.840.10008.5.1.4.1.1.66.4"), "Segmentation holds label masks"),
    # NIfTI
    "pixdim nan": (_pixdim(float("nan")), r"pixdim\[1\] \(voxel size along axis 0\) is nan"),
    "pixdim negative": (_pixdim(-0.9), r"pixdim\[1\] .* is -0.9; it must be a positive finite"),
    "pixdim zero": (_pixdim(0.0), r"pixdim\[1\] .* positive finite"),
    "pixdim inf": (_pixdim(float("inf")), r"pixdim\[1\] .* positive finite"),
    "608-byte nii claims 16000x16000x2 float64": (_nifti_claims((16000, 16000, 2)), "file is truncated or its header"),
    "nii claims 20000 per side": (_nifti_claims((20000, 10, 1)), "at most 16384 per side"),
    "nii unknown datatype": (
        lambda t: _nifti(t, edit=lambda h: h.__setitem__("datatype", 9999)),
        "NIfTI header is damaged|cannot be read",
    ),
    "nii.gz cut short": (lambda t: _write("c.nii.gz", gzip.compress(b"\x00" * 400)[:30])(t), "damaged|truncated|not a"),
    # raster
    "PNG zero width": (_write("z.png", _png(0, 4, 8, 0, b"")), "at least 2x2|damaged"),
    "TIFF 2 samples": (_write("two.tif", _tiff(2)), "TIFF has 2 samples per pixel"),
    "TIFF 5 samples": (_write("five.tif", _tiff(5)), "TIFF has 5 samples per pixel"),
    "TIFF IFD beyond the file": (_write("b.tif", b"II*\x00" + struct.pack("<I", 10**6) + b"\x00" * 40), "damaged"),
    "float64 TIFF spanning all of float64": (
        lambda t: cv2.imwrite(str(t / "f.tif"), np.array([[-1e308, 1e308], [0, 1]], np.float64)) and t / "f.tif",
        "wider than float64 arithmetic can map",
    ),
    "JPEG cut after the header": (
        lambda t: _write("j.jpg", cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))[1].tobytes()[:200])(t),
        "cannot be decoded|damaged|truncated",
    ),
    "random bytes named .nii": (_write("r.nii", os.urandom(600)), "not a NIfTI|damaged"),
}


def _digest(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.is_file():
            out[p.name] = "special"
        else:
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("build, match", REFUSED.values(), ids=REFUSED.keys())
def test_refused_in_one_line(tmp_path, build, match):
    path = build(tmp_path)
    before = _digest(tmp_path)
    with pytest.raises(InputError, match=match) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and message == message.strip() and len(message) < 400
    assert "Traceback" not in message and "pixels are not square" not in message
    assert _digest(tmp_path) == before


def test_huge_nifti_claim_fails_without_allocating(tmp_path):
    path = _nifti_claims((16000, 16000, 2))(tmp_path)
    assert path.stat().st_size == 608
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="truncated"):
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


# ---- accepted (a correct read) -------------------------------------------------------------


def _palette(tmp):
    rows = b"".join(b"\x00" + bytes([0, 1, 2, 3] * 2) for _ in range(6))
    return _write("pal.png", _png(8, 6, 8, 3, rows, bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 10, 20, 30])))(tmp)


def _one_bit(tmp):
    rows = b"".join(b"\x00" + bytes([0b10100000]) for _ in range(4))
    return _write("bit.png", _png(8, 4, 1, 0, rows))(tmp)


def test_palette_png_is_read_as_rgb_with_a_note(tmp_path):
    scan = read_image(_palette(tmp_path))
    assert scan.is_color and any("palette PNG is processed and written as RGB" in n for n in scan.notes)
    out = scan.write_derived(scan.frames, tmp_path / "o.png", _info())
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.shape == (6, 8, 3) and tuple(back[0, 1]) == (0, 0, 255)  # palette entry 1 is red (BGR)


def test_one_bit_png_is_read_as_8bit_gray_with_a_note(tmp_path):
    scan = read_image(_one_bit(tmp_path))
    assert scan.intensity.dtype == np.uint8 and any("1-bit gray PNG" in n for n in scan.notes)
    np.testing.assert_array_equal(scan.frames[0, 0], [1, 0, 1, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    path = _write("e.jpg", _jpeg_with_orientation(orientation))(tmp_path)
    scan = read_image(path)
    upright = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # OpenCV honours EXIF here
    assert scan.frames.shape[1:] == upright.shape
    np.testing.assert_allclose(scan.frames[0] * 255, upright, atol=2)
    assert any(f"orientation tag {orientation} applied" in n for n in scan.notes) == (orientation != 1)


def test_tiff_orientation_is_applied(tmp_path):
    plain = read_image(_write("p.tif", _tiff(1))(tmp_path), intensity="full")
    turned = read_image(_write("t.tif", _tiff(1, orientation=3))(tmp_path), intensity="full")
    np.testing.assert_array_equal(turned.frames[0], plain.frames[0][::-1, ::-1])


def test_gray_alpha_png_keeps_its_alpha(tmp_path):
    rows = b"".join(b"\x00" + bytes([100, 200, 50, 0] * 2) for _ in range(4))
    scan = read_image(_write("la.png", _png(4, 4, 8, 4, rows))(tmp_path))
    assert scan.alpha is not None and any("gray + alpha PNG" in n for n in scan.notes)
    back = cv2.imread(str(scan.write_derived(scan.frames, tmp_path / "o.png", _info())), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back[..., 3], [[200, 0, 200, 0]] * 4)


def test_single_slice_nifti_with_zero_slice_pixdim_reads(tmp_path):
    scan = read_image(_nifti(tmp_path, shape=(12, 10, 1), zooms=(0.9, 0.8, 0.0)))
    assert scan.spacing == pytest.approx((0.9, 0.8)) and scan.frames.shape == (1, 12, 10)


def test_finite_float64_tiff_reads(tmp_path):
    cv2.imwrite(str(tmp_path / "f.tif"), np.linspace(-5e3, 7e4, 64).reshape(8, 8))
    scan = read_image(tmp_path / "f.tif")
    assert scan.intensity.dtype == np.float64 and np.isfinite(scan.frames).all()
    big = np.repeat(np.repeat(scan.frames, 2, 1), 2, 2)
    back = cv2.imread(str(scan.write_derived(big, tmp_path / "o.tif", _info())), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.float64 and np.isfinite(back).all() and -5e3 <= back.min() and back.max() <= 7e4


def test_int32_tiff_names_the_real_output_problem(tmp_path):
    cv2.imwrite(str(tmp_path / "i.tif"), (np.arange(64).reshape(8, 8) * 100000).astype(np.int32))
    scan = read_image(tmp_path / "i.tif")
    with pytest.raises(OutputError, match="int32 pixels cannot be written as PNG, TIFF or JPEG; convert") as info:
        scan.check_output_name(tmp_path / "o.tif")
    assert "use a .tif output" not in str(info.value)


def test_content_beats_the_suffix(tmp_path):
    (tmp_path / "really_png.dcm").write_bytes(cv2.imencode(".png", np.full((4, 4), 9, np.uint8))[1].tobytes())
    assert read_image(tmp_path / "really_png.dcm").format.value == "png"
    (tmp_path / "really_dicom.png").write_bytes(_dicom_bytes(tmp_path))
    assert read_image(tmp_path / "really_dicom.png").format.value == "dicom"


def test_signed_8bit_dicom_reads(tmp_path):
    path = _edit(tmp_path, lambda ds: None)
    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = (np.arange(256) - 128).astype(np.int8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    scan = read_image(path)
    assert scan.intensity.dtype == np.int8 and scan.frames.shape == (1, 16, 16)


def test_library_noise_never_reaches_stderr(tmp_path, capfd):
    negative = _nifti(tmp_path, zooms=(0.9, 0.9, -3.0))  # nibabel would log a fix to stderr
    bad_uid = _edit(tmp_path, lambda ds: _raw_element(ds, 0x0020000E, "UI", b"1.2.3.abc"))  # SeriesInstanceUID
    capfd.readouterr()
    with pytest.raises(InputError, match=r"pixdim\[3\]"):
        read_image(negative)
    with read_image(bad_uid) as scan:
        scan.write_derived(scan.frames, tmp_path / "o.dcm", _info())
        notes = scan.notes
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert any("Invalid value for VR UI" in n for n in notes)  # pydicom's remark is kept as a note


def test_unknown_intensity_policy(tmp_path):
    with pytest.raises(InputError, match="intensity 'bogus' is not one of auto, full, data, robust"):
        read_image(_ct(tmp_path), intensity="bogus")


def test_empty_path():
    with pytest.raises(InputError, match="input path is empty"):
        read_image("")


def _info():
    from metasr.scanners import DerivationInfo

    return DerivationInfo("1", "ab" * 32, "0.1.0", "m")


def test_file_over_the_size_bound_is_refused_before_reading(tmp_path, monkeypatch):
    import metasr.scanners.reader as reader

    monkeypatch.setattr(reader, "MAX_FILE_BYTES", 1000)
    path = _ct(tmp_path)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read before the size check"))
    with pytest.raises(InputError, match=r"GiB; at most 0 GiB per file is accepted \(split it first\)"):
        read_image(path)


def test_concurrent_reads_restore_the_nibabel_logger(tmp_path):
    import logging
    from concurrent.futures import ThreadPoolExecutor

    logger = logging.getLogger("nibabel.global")
    before = (logger.handlers[:], logger.propagate)
    paths = [_nifti(tmp_path, name=f"v{k}.nii") for k in range(6)]
    with ThreadPoolExecutor(3) as pool:
        shapes = list(pool.map(lambda p: read_image(p).frames.shape, paths * 3))
    assert shapes == [(3, 12, 10)] * 18
    assert (logger.handlers, logger.propagate) == before


def test_deflate_bomb_is_refused_while_streaming(tmp_path, monkeypatch):
    import shutil

    from pydicom.data import get_testdata_file

    import metasr.scanners.dicom as dicom_module

    monkeypatch.setattr(dicom_module, "MAX_INFLATED_BYTES", 2**17)
    src = tmp_path / "dfl.dcm"
    shutil.copyfile(get_testdata_file("image_dfl.dcm"), src)  # 512x512 8-bit: inflates past 128 KiB
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("inflated before the bound"))
    with pytest.raises(InputError, match="deflated DICOM inflates to more than 131,072 bytes"):
        read_image(src)
