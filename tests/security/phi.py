"""A PHI-seeded ultrasound DICOM built from a real pydicom-data file, and a PHI search of a folder.

Every seeded string is unique and long enough that finding it anywhere under an output folder
(headers, JSON, logs, file names, even inside binary files) means it leaked.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

NAME = "Zebulon^Quillfeather"
MRN = "MRN7654321"
PHI = (
    "Zebulon", "Quillfeather", MRN, "ACC99887766", "19710304", "1971-03-04", "St Wenceslas Infirmary",
    "Dr Ottoline Brackwater", "Brackwater", "Nightingale Ward", "PRIVSECRET", "OVERLAYPHI",
    "TechThaddeus", "REQPHI-4242", "FRAMECOMMENTPHI", "Cowpat Lane 12", "PROCPHI", "PROTOPHI",
    "ContentCreatorGwendolyn", "+44 20 7946 0000",
)
FILE_NAME = f"QUILLFEATHER_ZEBULON_{MRN}.dcm"


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99LOCAL", meaning
    return item


def seeded_dicom(source: str = "OBXXXX1A.dcm") -> pydicom.Dataset:
    """A real ultrasound file with names and IDs in nested sequences, private tags and overlays."""
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, MRN, "19710304"
    ds.AccessionNumber, ds.InstitutionName = "ACC99887766", "St Wenceslas Infirmary"
    ds.ReferringPhysicianName = "Brackwater^Ottoline^^Dr"
    ds.PatientAddress, ds.PatientTelephoneNumbers = "Cowpat Lane 12", "+44 20 7946 0000"
    ds.CommentsOnThePerformedProcedureStep = "Seen by Dr Ottoline Brackwater on Nightingale Ward"
    ds.ProcedureCodeSequence = Sequence([_code("P1", "PROCPHI for Quillfeather")])
    ds.PerformedProtocolCodeSequence = Sequence([_code("P2", "PROTOPHI")])
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.ConceptNameCodeSequence = Sequence([_code("121106", "Comment")])
    text.TextValue = f"Patient Zebulon Quillfeather {MRN}"
    person = Dataset()
    person.RelationshipType, person.ValueType = "HAS OBS CONTEXT", "PNAME"
    person.PersonName = "Brackwater^Ottoline"
    ds.ContentSequence = Sequence([text, person])
    ds.ContentCreatorName = "ContentCreatorGwendolyn"
    request = Dataset()
    request.RequestedProcedureID = "REQPHI-4242"
    request.ScheduledProcedureStepDescription = "for Quillfeather"
    ds.RequestAttributesSequence = Sequence([request])
    # names and IDs in sequences the profile does not list, at depth 2
    inner = Dataset()
    inner.OperatorsName = "TechThaddeus"
    inner.add_new(0x00209158, "LT", "FRAMECOMMENTPHI")  # Frame Comments: free text, not in the profile
    inner.add_new(0x00100010, "PN", NAME)
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "T-D4000", "SRT", "Abdomen"
    region.AnatomicRegionModifierSequence = Sequence([inner])
    ds.AnatomicRegionSequence = Sequence([region])
    # private tags, top level and nested
    block = ds.private_block(0x0029, "SONOFM TEST", create=True)
    block.add_new(0x10, "LO", "PRIVSECRET")
    block.add_new(0x11, "UN", b"PRIVSECRET binary")
    inner.private_block(0x0031, "SONOFM TEST", create=True).add_new(0x10, "LO", "PRIVSECRET nested")
    # an overlay plane with a description
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000022, "LO", "OVERLAYPHI")
    ds.add_new(0x60003000, "OW", b"\xff" * 8)
    return ds


def write_seeded(folder: Path) -> Path:
    """The seeded file, named like a PACS export of the patient, in a folder named after them."""
    folder = folder / "QUILLFEATHER_ZEBULON"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    seeded_dicom().save_as(path)
    return path


def find_phi(root: Path, phi: tuple[str, ...] = PHI) -> list[str]:
    """Every (file, PHI string) leak under `root`: in names, raw bytes (any file) and, for DICOM
    files, in every element value read back with plain pydicom at any depth."""
    leaks = []
    lowered = [(p, p.lower().encode()) for p in phi]
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        leaks += [f"{rel}: name holds {p!r}" for p, _ in lowered if p.lower() in rel.lower()]
        if not path.is_file():
            continue
        data = path.read_bytes().lower()
        leaks += [f"{rel}: bytes hold {p!r}" for p, b in lowered if b in data]
        if path.suffix == ".dcm":
            ds = pydicom.dcmread(path)
            for elem in [*ds.file_meta.iterall(), *ds.iterall()]:
                value = str(elem.value).lower() if elem.VR not in ("OB", "OW", "UN") else ""
                leaks += [f"{rel}: {elem.tag} holds {p!r}" for p, _ in lowered if p.lower() in value]
                if elem.tag.is_private:
                    leaks.append(f"{rel}: private tag {elem.tag}")
                if 0x6000 <= elem.tag.group <= 0x60FF:
                    leaks.append(f"{rel}: overlay {elem.tag}")
    return leaks
