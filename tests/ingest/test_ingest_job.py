"""The ingest job: bad input is skipped with a counted reason, a killed job resumes, reports pair."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sonofm.data.dicom.deid import source_id
from sonofm.data.dicom.ingest import ingest_dicom, parse_frames
from sonofm.data.manifest import load_dataset
from sonofm.errors import UserError

GOOD = ("OBXXXX1A.dcm", "examples_rgb_color.dcm", "gdcm-US-ALOKA-16.dcm", "US1_J2KI.dcm")


def _by_name(us_files):
    return {p.name: p for p in us_files}


def _non_image(path: Path, sop_class: str, modality: str, **extra) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = modality, "Doe^Jane", "12345"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture()
def messy_src(tmp_path, us_files):
    by = _by_name(us_files)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for n in GOOD:
        shutil.copy(by[n], src / n)
    shutil.copy(by["color-pl.dcm"], src / "sub" / "doppler.dcm")
    (src / "empty.dcm").write_bytes(b"")
    (src / "notes.txt").write_text("not a DICOM file\n")
    data = by["OBXXXX1A_rle.dcm"].read_bytes()
    (src / "sub" / "truncated_pixels.dcm").write_bytes(data[: len(data) // 2])
    (src / "sub" / "truncated_header.dcm").write_bytes(data[:300])
    _non_image(src / "sr.dcm", "1.2.840.10008.5.1.4.1.1.88.11", "SR")  # Basic Text SR
    _non_image(src / "report.dcm", "1.2.840.10008.5.1.4.1.1.104.1", "DOC",  # Encapsulated PDF
               MIMETypeOfEncapsulatedDocument="application/pdf", EncapsulatedDocument=b"%PDF-1.4\n%%EOF\n")
    ds = pydicom.dcmread(by["examples_rgb_color.dcm"])
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.2.1143.999.1"  # no decoder knows it
    pydicom.dcmwrite(src / "sub" / "unknown_ts.dcm", ds, implicit_vr=False, little_endian=True)
    return src


def _run(src, out, key, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ingest_dicom(src, out, key_file=key, **kw)


@pytest.fixture()
def key(tmp_path):
    p = tmp_path / "key"
    p.write_bytes(b"0123456789abcdef0123456789abcdef")
    return p


def test_bad_input_skipped_with_reasons(messy_src, tmp_path, key):
    rep = _run(messy_src, tmp_path / "out", key)
    names = {source_id(key.read_bytes(), str(p.relative_to(messy_src))): str(p.relative_to(messy_src))
             for p in messy_src.rglob("*") if p.is_file()}
    reasons = {names[s["source"]]: s["reason"] for s in rep.skipped_files}
    assert reasons["empty.dcm"] == "empty_file"
    assert reasons["notes.txt"] == "not_dicom"
    assert reasons["sr.dcm"] == "non_image_sop"
    assert reasons["report.dcm"] == "non_image_sop"
    assert reasons["sub/unknown_ts.dcm"] == "unsupported_transfer_syntax"
    assert reasons["sub/truncated_pixels.dcm"] in ("corrupt", "decode_error")
    assert reasons["sub/truncated_header.dcm"] in ("corrupt", "not_dicom")
    assert reasons["sub/doppler.dcm"] == "doppler"
    # both colour files carry Doppler flow; without --keep-doppler only the B-mode files remain
    assert reasons["US1_J2KI.dcm"] == reasons["examples_rgb_color.dcm"] == "doppler"
    assert rep.ingested_files == 2 and rep.skipped["doppler"] == 3
    assert sum(rep.skipped.values()) == len(rep.skipped_files) == rep.files - rep.ingested_files
    saved = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert saved["skipped"] == rep.skipped
    assert load_dataset(tmp_path / "out").card["num_images"] == rep.images


def test_resume_after_kill(messy_src, tmp_path, key):
    out = tmp_path / "out"

    def kill_after_three(i, n, name):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(messy_src, out, key, progress=kill_after_three)
    assert not (out / "manifest.parquet").exists()
    rep = _run(messy_src, out, key)
    assert rep.resumed == 3
    fresh = _run(messy_src, tmp_path / "fresh", key)
    a, b = load_dataset(out).manifest, load_dataset(tmp_path / "fresh").manifest
    assert list(a["id"]) == list(b["id"])
    for rel in a["image"]:
        assert (out / rel).read_bytes() == (tmp_path / "fresh" / rel).read_bytes()
    assert rep.skipped == fresh.skipped


def test_reports_paired_by_accession_and_study_uid(tmp_path, us_files, key):
    by = _by_name(us_files)
    src = tmp_path / "src"
    src.mkdir()
    for n in ("gdcm-US-ALOKA-16.dcm", "OBXXXX1A.dcm"):
        shutil.copy(by[n], src / n)
    aloka = pydicom.dcmread(by["gdcm-US-ALOKA-16.dcm"], stop_before_pixels=True)
    ob = pydicom.dcmread(by["OBXXXX1A.dcm"], stop_before_pixels=True)
    assert aloka.AccessionNumber
    mapping = tmp_path / "reports.csv"
    mapping.write_text(
        "accession_number,study_instance_uid,report\n"
        f"{aloka.AccessionNumber},,"
        "\"Right kidney: simple cyst 14 x 12 mm, anechoic, posterior enhancement.\"\n"
        f",{ob.StudyInstanceUID},\"Thyroid: hypoechoic solid nodule 9 x 7 mm with microcalcifications.\"\n"
    )
    rep = _run(src, tmp_path / "out", key, reports=mapping)
    df = load_dataset(tmp_path / "out").manifest.set_index("source").reset_index()
    assert rep.images == 2
    kidney = df[df["organ"] == "kidney"].iloc[0]
    assert kidney["diagnosis"] == "cyst" and "anechoic" in kidney["attributes"]["echogenicity"]
    assert kidney["measurements"]["lesion_width_mm"] == pytest.approx(14.0)
    thyroid = df[df["organ"] == "thyroid"].iloc[0]
    assert "microcalcifications" in thyroid["attributes"]["internal"]
    assert thyroid["region"] == "thyroid"


def test_report_mapping_errors(tmp_path, key):
    from sonofm.data.dicom.reports import load_reports

    bad = tmp_path / "r.csv"
    bad.write_text("patient,report\nx,some text\n")
    with pytest.raises(UserError, match="row 1 has neither an accession number"):
        load_reports(bad)
    with pytest.raises(UserError, match="must be .csv or .jsonl"):
        load_reports(tmp_path / "key")
    with pytest.raises(UserError, match="--frames"):
        parse_frames("some")
    with pytest.raises(UserError, match="source folder not found"):
        ingest_dicom(tmp_path / "missing", tmp_path / "o")


def test_ed_es_selection_on_synthetic_cine():
    """End-diastole = largest blood pool (dark area), end-systole = smallest."""
    import numpy as np

    from sonofm.data.dicom.ingest import select_frames
    from sonofm.data.dicom.read import DicomImage

    radii = [10, 14, 18, 20, 16, 11, 8, 9, 13]
    yy, xx = np.mgrid[0:64, 0:64]
    frames = np.full((len(radii), 64, 64), 120, np.uint8)
    for i, r in enumerate(radii):
        frames[i][(yy - 32) ** 2 + (xx - 32) ** 2 < r * r] = 5
    img = DicomImage(frames=frames, rgb=None, photometric="MONOCHROME2", doppler=False, doppler_fraction=0.0,
                     pixel_spacing_mm=None, scan_mask=np.ones((64, 64), bool))
    assert select_frames(img, "ed-es") == [(3, "ED"), (6, "ES")]
    assert select_frames(img, 3) == [(0, None), (4, None), (8, None)]
    assert len(select_frames(img, "all")) == len(radii)
