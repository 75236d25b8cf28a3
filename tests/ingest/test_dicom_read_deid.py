"""Every ultrasound DICOM of pydicom/pydicom-data decodes, and its header is de-identified tag by tag."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pydicom
import pytest

from sonofm.data.dicom.deid import PROFILE, Deidentifier, resolve_action, source_id
from sonofm.data.dicom.read import read_dicom
from sonofm.data.dicom.read import testdata_ultrasound_files as _testdata_files
from sonofm.data.manifest import load_dataset

from .conftest import sha256

KEY = b"a-test-key-of-more-than-16-bytes"


def _markers(out):
    """Markers by source file name: outputs hold keyed hashes only; the key maps them back."""
    names = {m["source"]: m for m in (json.loads(p.read_text()) for p in (out / ".ingest").glob("*.json"))}
    files = [p.name for p in _testdata_files()]
    return {n: names[source_id(KEY, n)] for n in files if source_id(KEY, n) in names}


def test_all_testdata_ultrasound_files_found(us_files):
    names = {p.name for p in us_files}
    assert len(us_files) >= 21
    for n in ("US1_J2KI.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "color3d_jpeg_baseline.dcm",
              "gdcm-US-ALOKA-16_big.dcm", "OBXXXX1A_rle_2frame.dcm", "examples_ybr_color.dcm"):
        assert n in names


def test_every_file_decodes_and_is_ingested(ingested, us_files):
    src, out, report, _ = ingested
    assert report.files == len(us_files)
    assert report.skipped == {}, report.skipped_files
    assert report.ingested_files == len(us_files)
    markers = _markers(out)
    for f in us_files:
        rows = markers[f.name]["rows"]
        assert rows, f.name
        for r in rows:
            img = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / r["image"]))
            assert img.dtype == np.uint8 and img.size > 0 and img.max() > 0, f.name


def test_decode_matches_uncompressed_reference(us_files):
    """Lossless codecs must give the same pixels as the uncompressed original."""
    by = {p.name: p for p in us_files}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = read_dicom(by["US1_UNCR.dcm"])
        j2k = read_dicom(by["US1_J2KR.dcm"])
        ob = read_dicom(by["OBXXXX1A.dcm"])
        for variant in ("OBXXXX1A_rle.dcm", "OBXXXX1A_expb.dcm"):
            np.testing.assert_array_equal(read_dicom(by[variant]).frames, ob.frames)
        lossy = read_dicom(by["US1_J2KI.dcm"])
        aloka = read_dicom(by["gdcm-US-ALOKA-16.dcm"])
        aloka_be = read_dicom(by["gdcm-US-ALOKA-16_big.dcm"])
        cine = read_dicom(by["examples_ybr_color.dcm"])
    np.testing.assert_array_equal(j2k.rgb, ref.rgb)
    assert np.abs(lossy.frames.astype(int) - ref.frames).mean() < 3.0
    np.testing.assert_array_equal(aloka.frames, aloka_be.frames)
    assert cine.frames.shape == (30, 240, 320)
    assert ref.doppler and not ob.doppler and not aloka.doppler and not cine.doppler


@pytest.mark.parametrize(
    "name, spacing",
    [("gdcm-US-ALOKA-16.dcm", 0.3826530650258064), ("OBXXXX1A.dcm", 0.2622878766196998),
     ("JPGLosslessP14SV1_1s_1f_8b.dcm", 0.25476696592378157), ("US1_UNCR.dcm", None)],
)
def test_spacing_from_ultrasound_regions(ingested, name, spacing):
    _, out, _, _ = ingested
    row = _markers(out)[name]["rows"][0]
    if spacing is None:
        assert row["pixel_spacing_mm"] is None
    else:
        assert row["pixel_spacing_mm"] == pytest.approx(spacing, rel=1e-9)


def test_sources_untouched(ingested):
    src, _, _, before = ingested
    assert {p.name: sha256(p) for p in src.iterdir()} == before


def test_header_deidentified_tag_by_tag(ingested, us_files):
    src, out, _, _ = ingested
    markers = _markers(out)
    deid = Deidentifier(b"a-test-key-of-more-than-16-bytes")
    checked = 0
    for f in us_files:
        orig = pydicom.dcmread(src / f.name, stop_before_pixels=True)
        new = pydicom.dcmread(out / markers[f.name]["rows"][0]["imaging"]["dicom"])
        patient = deid.patient_key(orig)
        assert not any(e.tag.is_private for e in new.iterall()), f.name
        assert new.PatientIdentityRemoved == "YES"
        for elem in orig:
            code = PROFILE.get(elem.keyword)
            if code is None or elem.value in (None, "", []):
                continue
            kw = elem.keyword
            action = "P" if kw in ("PatientID", "PatientName") else resolve_action(code, elem.VR, kw)
            checked += 1
            if action == "X":
                assert kw not in new, (f.name, kw)
            elif action == "Z":
                assert new.get(kw) in (None, "", []), (f.name, kw)
            elif action == "P":
                assert str(new.get(kw)) == deid.pseudonym(patient) != str(elem.value), (f.name, kw)
            elif action == "U":
                assert str(new.get(kw)) == deid.uid(str(elem.value)), (f.name, kw)
                assert str(new.get(kw)).startswith("2.25.")
            elif action == "S":
                import datetime as dt

                old = dt.datetime.strptime(str(elem.value).replace(".", "")[:8], "%Y%m%d")
                got = dt.datetime.strptime(str(new.get(kw))[:8], "%Y%m%d")
                assert (got - old).days == deid.date_shift_days(patient), (f.name, kw)
        # no original identifying string survives anywhere in the new header
        for kw in ("PatientName", "PatientID", "InstitutionName", "AccessionNumber", "StudyInstanceUID"):
            v = str(orig.get(kw, "") or "")
            if len(v) >= 4:
                assert v not in str(new), (f.name, kw)
    assert checked > 100


def test_pseudonyms_consistent_and_keyed(ingested):
    _, out, _, _ = ingested
    markers = _markers(out)
    ob = {markers[n]["rows"][0]["patient_id"] for n in markers if n.startswith("OBXXXX1A")}
    assert len(ob) == 1  # one patient, six files
    assert re.fullmatch(r"P[0-9a-f]{16}", ob.pop())
    a, b = Deidentifier(b"k" * 32), Deidentifier(b"j" * 32)
    assert a.pseudonym("PatientID=1") == Deidentifier(b"k" * 32).pseudonym("PatientID=1")
    assert a.pseudonym("PatientID=1") != b.pseudonym("PatientID=1")
    assert -3650 <= a.date_shift_days("x") <= -1


def test_audit_log_records_every_change(ingested, us_files):
    _, out, _, _ = ingested
    lines = [json.loads(x) for x in (out / "deid_audit.jsonl").read_text().splitlines()]
    assert {e["file"] for e in lines} == {source_id(KEY, f.name) for f in us_files}
    names = {e["keyword"] for e in lines if e["file"] == source_id(KEY, "gdcm-US-ALOKA-16.dcm")}
    assert {"PatientName", "AccessionNumber", "SOPInstanceUID", "StudyDate"} <= names
    # the audit never stores an original value
    assert "NAME^PATIENT" not in (out / "deid_audit.jsonl").read_text()


def test_dataset_is_valid_with_card(ingested):
    _, out, report, _ = ingested
    ds = load_dataset(out, check_files=True)
    assert len(ds) == report.images
    assert ds.card["num_images"] == report.images
    frames = set(ds.manifest["frame"].dropna())
    assert frames == {"ED", "ES"}  # the cines were reduced to end-diastole and end-systole
    by_patient = ds.manifest.groupby("patient_id")["split"].nunique()
    assert (by_patient == 1).all()


@pytest.mark.slow
def test_eval_runs_on_ingested_dataset(ingested, tmp_path):
    """The ingest output is a standard dataset directory: the quick eval suite runs on it."""
    from sonofm.eval.runner import load_suite, run_suite
    from sonofm.models import build_model, save_model

    _, out, _, _ = ingested
    save_model(build_model("tiny"), tmp_path / "model")
    run_suite([str(tmp_path / "model")], str(out), str(tmp_path / "eval"), load_suite("quick"),
              device="cpu", cache_dir=False, html=False, n_boot=20)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results


def test_deidentify_synthetic_nested_private_overlay():
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN-1", "19600101"
    ds.AcquisitionDateTime = "20200102030405"
    ds.StudyDate, ds.InstitutionName, ds.StudyInstanceUID = "20200102", "St Elsewhere", "1.2.3.4"
    ds.OperatorsName = "Tech^Tom"
    ds.add_new(0x00091010, "LO", "private secret")
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)  # overlay data
    item = Dataset()
    item.InstitutionName = "Nested Hospital"
    item.CodeValue = "T-1"
    ds.AnatomicRegionSequence = [item]
    deid = Deidentifier(b"k" * 32)
    audit = deid.deidentify(ds, source="x.dcm")
    shift = deid.date_shift_days("PatientID=MRN-1")
    assert ds.PatientID == ds.PatientName == deid.pseudonym("PatientID=MRN-1")
    assert ds.PatientBirthDate in (None, "") and "OperatorsName" not in ds
    assert "InstitutionName" not in ds and "InstitutionName" not in ds.AnatomicRegionSequence[0]
    assert ds.AnatomicRegionSequence[0].CodeValue == "T-1"  # non-PHI content survives
    assert 0x00091010 not in ds and 0x60003000 not in ds
    import datetime as dt

    assert ds.StudyDate == (dt.date(2020, 1, 2) + dt.timedelta(days=shift)).strftime("%Y%m%d")
    assert ds.AcquisitionDateTime.endswith("030405") and ds.AcquisitionDateTime[:8] == ds.StudyDate
    assert ds.StudyInstanceUID == deid.uid("1.2.3.4")
    paths = {e["path"] for e in audit}
    assert "AnatomicRegionSequence[0].InstitutionName" in paths
    assert all("Doe" not in json.dumps(e) and "Elsewhere" not in json.dumps(e) for e in audit)


# Basic Profile codes copied by hand from DICOM PS3.15 Table E.1-1 (independent of PROFILE).
STANDARD_CODES = {
    "PatientName": "Z", "PatientID": "Z", "PatientBirthDate": "Z", "PatientSex": "Z", "PatientAge": "X",
    "AccessionNumber": "Z", "StudyDate": "Z", "StudyTime": "Z", "StudyID": "Z",
    "ReferringPhysicianName": "Z", "InstitutionName": "X/Z/D", "InstitutionAddress": "X",
    "StationName": "X/Z/D", "OperatorsName": "X/Z/D", "DeviceSerialNumber": "X/Z/D",
    "StudyInstanceUID": "U", "SeriesInstanceUID": "U", "SOPInstanceUID": "U", "FrameOfReferenceUID": "U",
    "ContentDate": "Z/D", "SeriesDate": "X/D", "AcquisitionDateTime": "X/Z/D", "OtherPatientIDs": "X",
    "PatientAddress": "X", "StudyDescription": "X", "SeriesDescription": "X", "ImageComments": "X",
}


def test_profile_table_matches_standard():
    for kw, code in STANDARD_CODES.items():
        assert PROFILE[kw] == code, kw
    # every profile keyword is a real DICOM keyword
    from pydicom.datadict import tag_for_keyword

    assert all(tag_for_keyword(kw) is not None for kw in PROFILE)


def test_doppler_kept_as_rgb_png(ingested):
    _, out, _, _ = ingested
    rows = _markers(out)["US1_UNCR.dcm"]["rows"]
    from sonofm.data.pngio import read_png

    img = read_png(out / rows[0]["image"])
    assert img.ndim == 3 and rows[0]["imaging"]["doppler"] is True
    gray_rows = _markers(out)["gdcm-US-ALOKA-16.dcm"]["rows"]
    assert read_png(out / gray_rows[0]["image"]).ndim == 2
