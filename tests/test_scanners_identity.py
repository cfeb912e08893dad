"""Series identity a PACS accepts: deterministic UIDs, own series number, kept descriptions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pydicom
import pytest
from _scanners_data import ct_phantom, write_ct
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from metasr.core.errors import InputError
from metasr.scanners import DerivationInfo, read_image
from metasr.scanners.dicom_derive import SERIES_NUMBER_OFFSET, derived_series_description

INFO = DerivationInfo("2", "ab" * 32, "0.1.0", "metasrgan-test", exact_scale=Fraction(2))


def _derive(src, out, info=INFO):
    with read_image(src) as scan:
        return pydicom.dcmread(scan.write_derived(scan.frames, out, info))


def test_rerun_gives_identical_uids_and_other_inputs_other_ones(tmp_path):
    series = generate_uid()
    a = write_ct(tmp_path / "a.dcm", ct_phantom(16), series_uid=series)
    b = write_ct(tmp_path / "b.dcm", ct_phantom(16, seed=1), series_uid=series)
    first, again, other = _derive(a, tmp_path / "1.dcm"), _derive(a, tmp_path / "2.dcm"), _derive(b, tmp_path / "3.dcm")
    assert first.SOPInstanceUID == again.SOPInstanceUID and first.SeriesInstanceUID == again.SeriesInstanceUID
    assert first.SOPInstanceUID != other.SOPInstanceUID and first.SeriesInstanceUID == other.SeriesInstanceUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    scale3 = _derive(a, tmp_path / "4.dcm", DerivationInfo("3", INFO.model_id, "0.1.0", "m", exact_scale=Fraction(3)))
    model2 = _derive(a, tmp_path / "5.dcm", DerivationInfo("2", "cd" * 32, "0.1.0", "m", exact_scale=Fraction(2)))
    uids = {d.SOPInstanceUID for d in (first, scale3, model2)} | {d.SeriesInstanceUID for d in (first, scale3, model2)}
    assert len(uids) == 6 and all(len(u) <= 64 for u in uids)


def test_series_number_and_description(tmp_path):
    src = write_ct(tmp_path / "a.dcm", ct_phantom(16), SeriesNumber=7, SeriesDescription="AX T1 POST GAD")
    out = _derive(src, tmp_path / "o.dcm")
    assert out.SeriesNumber % SERIES_NUMBER_OFFSET == 7 and out.SeriesNumber > SERIES_NUMBER_OFFSET
    assert out.SeriesDescription.startswith("AX T1 POST GAD; ") and "not for primary diagnosis" in out.SeriesDescription
    assert len(out.SeriesDescription) <= 64


@pytest.mark.parametrize("source", ["", "x" * 64, "Thorax  1.0  B70f  lung window with a very long name"])
def test_description_keeps_the_note_within_64(source):
    text = derived_series_description(source, INFO)
    assert len(text) <= 64 and text.endswith("not for primary diagnosis")
    assert text.startswith(" ".join(source.split())[:10])


def test_earlier_derivation_is_appended_to(tmp_path):
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113040", "DCM", "Lossy Compression"
    src = write_ct(
        tmp_path / "a.dcm",
        ct_phantom(16),
        DerivationDescription="JPEG 2000 lossy, ratio 10:1",
        DerivationCodeSequence=Sequence([code]),
    )
    out = _derive(src, tmp_path / "o.dcm")
    assert out.DerivationDescription.startswith("JPEG 2000 lossy, ratio 10:1; Super-resolved by metasr")
    codes = [(c.CodeValue, c.CodeMeaning) for c in out.DerivationCodeSequence]
    assert codes == [("113040", "Lossy Compression"), ("113085", "Spatial resampling")]


def test_overlays_are_dropped_with_a_note(tmp_path):
    src = write_ct(tmp_path / "a.dcm", ct_phantom(16))
    ds = pydicom.dcmread(src)
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60003000, "OW", np.zeros(16, np.uint16).tobytes())
    ds.save_as(src, enforce_file_format=True)
    with read_image(src) as scan:
        out = pydicom.dcmread(
            scan.write_derived(np.repeat(np.repeat(scan.frames, 2, 1), 2, 2), tmp_path / "o.dcm", INFO)
        )
        assert any("overlay planes (60xx) dropped" in n for n in scan.notes)
    assert not any(elem.tag.group == 0x6000 for elem in out)


def _refused(tmp_path, match: str, **attrs):
    src = write_ct(tmp_path / "x.dcm", ct_phantom(16), **attrs)
    before = src.read_bytes()
    with pytest.raises(InputError, match=match) as info:
        read_image(src)
    assert "\n" not in str(info.value) and src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dcm"]


@pytest.mark.parametrize(
    "attrs, match",
    [
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.481.2"}, "RT Dose grid holds dose values"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.66.4"}, "Segmentation holds label masks"),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]}, "Siemens mosaic tiles several slices"),
    ],
    ids=["rt-dose", "seg", "mosaic-image-type"],
)
def test_non_images_are_refused_with_why(tmp_path, attrs, match):
    _refused(tmp_path, match, **attrs)


def test_mosaic_by_private_tag_is_refused(tmp_path):
    src = write_ct(tmp_path / "x.dcm", ct_phantom(16))
    ds = pydicom.dcmread(src)
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100A, "US", 36)
    ds.save_as(src, enforce_file_format=True)
    with pytest.raises(InputError, match="de-mosaic it first"):
        read_image(src)
