"""No PHI string survives ingestion anywhere under the output folder (checked with plain pydicom).

The seeded file carries names and IDs in nested sequences, structured content, free text, coded
sequences, private tags, overlays and its own file name. Every real pydicom-data ultrasound file
is checked the same way in tests/ingest/test_no_identifier_left.py (on the shared ingest).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom

from sonofm.data.dicom.deid import Deidentifier, decide, source_id

from .phi import FILE_NAME, MRN, find_phi, seeded_dicom, write_seeded

SAFE_KEYWORDS = {  # device and code text the allow-list keeps on purpose
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "TransducerData", "CodeMeaning",
    "CodeValue", "CodingSchemeDesignator", "ProcessingFunction", "ViewName", "StageName",
    "ImplementationVersionName", "LUTExplanation", "WindowCenterWidthExplanation",
}


def _sonofm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("sonofm")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})


def test_seeded_header_deidentified_at_every_depth():
    ds = seeded_dicom()
    Deidentifier(b"k" * 32).deidentify(ds, source="F0")
    for kw in ("ContentSequence", "CommentsOnThePerformedProcedureStep", "PerformedProtocolCodeSequence",
               "RequestAttributesSequence", "PatientAddress", "PatientTelephoneNumbers"):
        assert kw not in ds, kw
    assert list(ds.get("ProcedureCodeSequence", [])) == []
    inner = ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
    assert "OperatorsName" not in inner and 0x00209158 not in inner and 0x00100010 in inner
    assert str(inner[0x00100010].value) == ds.PatientID  # a nested PatientName gets the pseudonym too
    assert ds.AnatomicRegionSequence[0].CodeMeaning == "Abdomen"  # anatomy codes survive
    assert "SequenceOfUltrasoundRegions" in ds  # pixel spacing survives
    assert not [e for e in ds.iterall() if e.tag.is_private or 0x6000 <= e.tag.group <= 0x60FF]
    assert not find_phi_in_dataset(ds)


def find_phi_in_dataset(ds) -> list[str]:
    from .phi import PHI

    text = " ".join(str(e.value) for e in ds.iterall() if e.VR not in ("OB", "OW", "UN")).lower()
    return [p for p in PHI if p.lower() in text]


def test_unknown_text_is_removed_known_safe_kept():
    from pydicom.dataelem import DataElement

    assert decide(DataElement(0x00209158, "LT", "x")) == "X"  # free text the profile does not list
    assert decide(DataElement(0x00080070, "LO", "GE")) == "K"  # Manufacturer
    assert decide(DataElement(0x00080104, "LO", "x"), parent="ProcedureCodeSequence") == "X"
    assert decide(DataElement(0x00080104, "LO", "x"), parent="AnatomicRegionSequence") == "K"
    assert decide(DataElement(0x00080016, "UI", "1.2.840.10008.5.1.4.1.1.6.1")) == "U"  # remap keeps standard
    assert decide(DataElement(0x00181030, "LO", "x")) == "X"  # ProtocolName (profile X/D)


def test_no_phi_anywhere_under_output(tmp_path):
    """CLI ingest of the seeded file (+ a report naming the patient): headers, JSON, logs, names."""
    src = tmp_path / "src"
    path = write_seeded(src)
    shutil.copy(path, path.with_name("copy_" + FILE_NAME))
    reports = tmp_path / "reports.csv"
    reports.write_text(
        "accession_number,report\n"
        f'ACC99887766,"Patient Zebulon QUILLFEATHER ({MRN}), born 04/03/1971. Liver normal in size."\n'
    )
    out = tmp_path / "out"
    key = tmp_path / "keys" / "deid.key"
    run = _sonofm("ingest", "dicom", str(src), "--out", str(out), "--reports", str(reports),
                  "--key-file", str(key), "--new-key", "--frames", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (out / "cli.log").write_text(run.stdout + run.stderr)  # the console output is searched too
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert find_phi(out) == []
    manifest = pydicom.dcmread(next(out.rglob("*.dcm")))
    assert manifest.PatientIdentityRemoved == "YES"
    rep = json.loads((out / "ingest_report.json").read_text())
    assert rep["new_images"] == 2
    markers = [json.loads(p.read_text()) for p in (out / ".ingest").glob("*.json")]
    keyb = key.read_bytes().strip()
    want = {source_id(keyb, f"QUILLFEATHER_ZEBULON/{n}") for n in (FILE_NAME, "copy_" + FILE_NAME)}
    assert {m["source"] for m in markers} == want  # mappable back with the key
    report = markers[0]["rows"][0]
    assert "Liver normal" in report["report"] and "[removed]" in report["report"]
    located = _sonofm("ingest", "locate", str(src), "--out", str(out), "--key-file", str(key), cwd=tmp_path)
    assert located.returncode == 0 and FILE_NAME in located.stdout and min(want) in located.stdout


def _identifying_strings(path: Path) -> set[str]:
    """Independently of sonofm: every text value of the original that is not device/code text."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    found = set()
    for e in [*ds.iterall()]:
        if e.VR in ("PN", "LO", "SH", "LT", "ST", "UT", "AE") and e.keyword not in SAFE_KEYWORDS:
            for v in e.value if isinstance(e.value, pydicom.multival.MultiValue) else [e.value]:
                s = str(v).strip()
                if len(s) >= 6 and not s.replace(".", "").isdigit():
                    found.add(s)
        if e.keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID",
                         "AccessionNumber") and len(str(e.value)) >= 6:
            found.add(str(e.value))
    # a value that is also device text kept on purpose (e.g. a preset name) is not a leak
    kept = {str(e.value).strip() for e in ds.iterall() if e.keyword in SAFE_KEYWORDS}
    return found - kept
