"""De-identification of DICOM headers: the PS3.15 Basic Application Level Confidentiality Profile.

PROFILE maps attribute keywords to the action codes of PS3.15 Table E.1-1 (D replace with a
dummy, Z zero-length or dummy, X remove, K keep, C clean, U replace UID; combined codes such as
X/Z/D as in the standard). `resolve_action` turns a code into what sonofm does, with the
Retain Longitudinal Temporal Information with Modified Dates Option (dates shifted per patient,
so intervals within a patient survive) and pseudonymous patient IDs from an HMAC keyed hash
(same key + same patient -> same pseudonym; without the key nobody can reverse or recompute it).
All private tags, overlays and curves are removed. Every change is returned as an audit entry;
old values are never written to the audit, only their length.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonofm.atomic import atomic_write_bytes
from sonofm.errors import UserError

log = logging.getLogger(__name__)

# PS3.15 (2024) Table E.1-1, Basic Profile column, for the attributes found in ultrasound files.
PROFILE: dict[str, str] = {
    "AccessionNumber": "Z",
    "AcquisitionComments": "X",
    "AcquisitionDate": "X/Z",
    "AcquisitionDateTime": "X/Z/D",
    "AcquisitionDeviceProcessingDescription": "X/D",
    "AcquisitionTime": "X/Z",
    "AdditionalPatientHistory": "X",
    "AdmissionID": "X",
    "AdmittingDiagnosesDescription": "X",
    "Allergies": "X",
    "BranchOfService": "X",
    "ContentCreatorName": "Z",
    "ContentDate": "Z/D",
    "ContentTime": "Z/D",
    "CountryOfResidence": "X",
    "CurrentPatientLocation": "X",
    "DerivationDescription": "X",
    "DeviceSerialNumber": "X/Z/D",
    "DeviceUID": "U",
    "EthnicGroup": "X",
    "FrameOfReferenceUID": "U",
    "ImageComments": "X",
    "InstanceCreationDate": "X/D",
    "InstanceCreationTime": "X/Z/D",
    "InstanceCreatorUID": "U",
    "InstitutionAddress": "X",
    "InstitutionCodeSequence": "X/Z/D",
    "InstitutionName": "X/Z/D",
    "InstitutionalDepartmentName": "X",
    "IrradiationEventUID": "U",
    "IssuerOfPatientID": "X",
    "LastMenstrualDate": "X",
    "MedicalAlerts": "X",
    "MedicalRecordLocator": "X",
    "MilitaryRank": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "Occupation": "X",
    "OperatorsName": "X/Z/D",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "PatientAddress": "X",
    "PatientAge": "X",
    "PatientBirthDate": "Z",
    "PatientBirthName": "X",
    "PatientBirthTime": "X",
    "PatientComments": "X",
    "PatientID": "Z",
    "PatientInstitutionResidence": "X",
    "PatientMotherBirthName": "X",
    "PatientName": "Z",
    "PatientSex": "Z",
    "PatientSize": "X",
    "PatientState": "X",
    "PatientTelephoneNumbers": "X",
    "PatientWeight": "X",
    "PerformedProcedureStepDescription": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X",
    "PerformingPhysicianName": "X",
    "PhysiciansOfRecord": "X",
    "PregnancyStatus": "X",
    "ProtocolName": "X/D",
    "ReferencedPatientSequence": "X",
    "ReferencedPerformedProcedureStepSequence": "X/Z/D",
    "ReferencedSOPInstanceUID": "U",
    "ReferencedStudySequence": "X/Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianTelephoneNumbers": "X",
    "RegionOfResidence": "X",
    "RequestAttributesSequence": "X",
    "RequestedProcedureDescription": "X/Z",
    "RequestedProcedureID": "X",
    "RequestingPhysician": "X",
    "ResponsibleOrganization": "X",
    "ResponsiblePerson": "X",
    "ScheduledProcedureStepDescription": "X",
    "SeriesDate": "X/D",
    "SeriesDescription": "X",
    "SeriesInstanceUID": "U",
    "SeriesTime": "X/D",
    "SmokingStatus": "X",
    "SOPInstanceUID": "U",
    "SourceImageSequence": "X/Z/U",
    "StationName": "X/Z/D",
    "StudyDate": "Z",
    "StudyDescription": "X",
    "StudyID": "Z",
    "StudyInstanceUID": "U",
    "StudyTime": "Z",
    "TimezoneOffsetFromUTC": "X",
    # Further Table E.1-1 rows: free text, people, places and the sequences that carry them.
    "AcquisitionContextSequence": "X",
    "ActualHumanPerformersSequence": "X",
    "AdmittingDate": "X",
    "AdmittingTime": "X",
    "AuthorObserverSequence": "X",
    "CommentsOnThePerformedProcedureStep": "X",
    "ConsultingPhysicianName": "X",
    "ContentSequence": "X",
    "ContrastBolusAgent": "D",
    "CustodialOrganizationSequence": "X",
    "DetectorID": "X/Z/D",
    "DigitalSignaturesSequence": "X",
    "DischargeDiagnosisDescription": "X",
    "DistributionAddress": "X",
    "DistributionName": "X",
    "EncryptedAttributesSequence": "X",
    "FillerOrderNumberImagingServiceRequest": "Z",
    "GantryID": "X/Z/D",
    "HL7StructuredDocumentReferenceSequence": "X",
    "HumanPerformerName": "X",
    "HumanPerformerOrganization": "X",
    "IconImageSequence": "X",
    "ImagingServiceRequestComments": "X",
    "InsurancePlanIdentification": "X",
    "InterpretationAuthor": "X",
    "InterpretationDiagnosisDescription": "X",
    "InterpretationRecorder": "X",
    "InterpretationText": "X",
    "InterpretationTranscriber": "X",
    "IssuerOfAdmissionIDSequence": "X",
    "ModifiedAttributesSequence": "X",
    "OperatorIdentificationSequence": "X",
    "OrderCallbackPhoneNumber": "X",
    "OrderEnteredBy": "X",
    "OrderEntererLocation": "X",
    "OriginalAttributesSequence": "X",
    "ParticipantSequence": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientPrimaryLanguageCodeSequence": "X",
    "PatientReligiousPreference": "X",
    "PatientSexNeutered": "X/Z",
    "PatientTransportArrangements": "X",
    "PerformedLocation": "X",
    "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepEndTime": "X",
    "PerformedProtocolCodeSequence": "X",
    "PerformedStationAETitle": "X",
    "PerformedStationName": "X",
    "PerformedStationNameCodeSequence": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "PersonIdentificationCodeSequence": "D",
    "PersonName": "D",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "PlacerOrderNumberImagingServiceRequest": "Z",
    "PlateID": "X",
    "ProcedureCodeSequence": "X/Z",
    "ReasonForStudy": "X",
    "ReasonForTheRequestedProcedure": "X",
    "ReferencedImageSequence": "X/Z/U",
    "ReferencedPatientPhotoSequence": "X",
    "ReferencedSeriesSequence": "X",
    "ReferencedVisitSequence": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "RequestedProcedureComments": "X",
    "RequestedProcedureLocation": "X",
    "RequestingService": "X",
    "ResultsComments": "X",
    "ResultsIDIssuer": "X",
    "ScheduledHumanPerformersSequence": "X",
    "ScheduledPatientInstitutionResidence": "X",
    "ScheduledPerformingPhysicianName": "X",
    "ScheduledProcedureStepEndDate": "X",
    "ScheduledProcedureStepEndTime": "X",
    "ScheduledProcedureStepID": "X",
    "ScheduledProcedureStepLocation": "X",
    "ScheduledProcedureStepStartDate": "X",
    "ScheduledProcedureStepStartTime": "X",
    "ScheduledStationAETitle": "X",
    "ScheduledStationName": "X",
    "ServiceEpisodeDescription": "X",
    "ServiceEpisodeID": "X",
    "SourceApplicationEntityTitle": "X",
    "SpecialNeeds": "X",
    "StorageMediaFileSetID": "X",
    "StorageMediaFileSetUID": "U",
    "StudyComments": "X",
    "StudyIDIssuer": "X",
    "TextComments": "X",
    "TextString": "X",
    "TopicAuthor": "X",
    "TopicKeywords": "X",
    "TopicSubject": "X",
    "TopicTitle": "X",
    "VerifyingObserverName": "D",
    "VerifyingObserverSequence": "D",
    "VerifyingOrganization": "X",
    "VisitComments": "X",
}
# Person/identifier attributes whose Z/D action gets the patient's pseudonym (a dummy value that
# keeps images of one patient linkable without revealing who it is).
PSEUDONYM_KEYWORDS = ("PatientID", "PatientName")

# Attributes the profile does not list are judged by VR (an allow-list, not a block-list): free
# text and names survive only when known to be safe; dates are shifted; instance UIDs remapped.
TEXT_VRS = frozenset({"LO", "LT", "ST", "UT", "SH", "PN", "UC", "AE", "UR"})
SAFE_TEXT = frozenset({
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "TransducerData", "ProcessingFunction",
    "ImplementationVersionName", "DeidentificationMethod", "ViewName", "StageName",
    "LUTExplanation", "WindowCenterWidthExplanation", "FrameLabel",
})
# Code item attributes are kept only inside code sequences known to hold device/anatomy codes.
CODE_TEXT = frozenset({
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue",
    "URNCodeValue", "ContextIdentifier", "MappingResource", "MappingResourceName",
})
SAFE_CODE_SEQUENCES = frozenset({
    "AnatomicRegionSequence", "AnatomicRegionModifierSequence", "PrimaryAnatomicStructureSequence",
    "PrimaryAnatomicStructureModifierSequence", "ViewCodeSequence", "ViewModifierCodeSequence",
    "DeidentificationMethodCodeSequence", "TransducerScanPatternCodeSequence",
    "TransducerGeometryCodeSequence", "TransducerBeamSteeringCodeSequence",
    "TransducerApplicationCodeSequence", "MeasurementUnitsCodeSequence", "StageCodeSequence",
    "DerivationCodeSequence", "PurposeOfReferenceCodeSequence", "AcquisitionDeviceTypeCodeSequence",
})
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
SAFE_BINARY = frozenset({
    "PixelData", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData",
    "LUTData", "ICCProfile", "FileMetaInformationVersion",
})
DATE_SHIFT_RANGE_DAYS = 3650
DEID_METHOD = "sonofm PS3.15 Basic Profile, Modified Dates"
# CID 7050 codes for the options applied.
DEID_CODES = (("113100", "Basic Application Confidentiality Profile"), ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))  # noqa: E501


# Dates that are emptied rather than shifted: with the study dates shifted consistently, a shifted
# birth date would still give the exact age, and the birth date is the strongest quasi-identifier.
NEVER_SHIFT = ("PatientBirthDate",)


def resolve_action(code: str, vr: str, keyword: str = "") -> str:
    """What sonofm does for a profile code: 'X' remove, 'Z' empty, 'K' keep, 'U' remap, 'S' date shift.

    Dates/times under an option that allows D are shifted (Modified Dates Option); everything else
    that may be removed is removed (the safest choice); Z stays an empty value (Type 2 attributes
    must remain present).
    """
    parts = code.split("/")
    if keyword in NEVER_SHIFT:
        return "Z"
    if "U" in parts and vr == "UI":
        return "U"
    if vr in ("DA", "DT") and ("D" in parts or "Z" in parts):
        return "S"
    if vr == "TM" and "D" in parts:
        return "Z"
    if "X" in parts:
        return "X"
    if "Z" in parts:
        return "Z"
    if "D" in parts:
        return "Z"
    return "K"


@dataclass
class Deidentifier:
    """Keyed, deterministic de-identification: same key -> same pseudonyms, UIDs and date shifts."""

    key: bytes
    audit: list[dict[str, Any]] = field(default_factory=list)

    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self.key, f"{kind}:{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient: str) -> str:
        """Pseudonymous patient id: 'P' + 16 hex digits of HMAC-SHA256(key, patient)."""
        return "P" + self._mac("patient", patient).hex()[:16]

    def date_shift_days(self, patient: str) -> int:
        """Per-patient shift into the past, 1..DATE_SHIFT_RANGE_DAYS days."""
        return -(int.from_bytes(self._mac("dateshift", patient)[:8], "big") % DATE_SHIFT_RANGE_DAYS + 1)

    def uid(self, uid: str) -> str:
        """Consistent replacement UID under the 2.25 (UUID-derived) root (PS3.5 B.2)."""
        return "2.25." + str(int.from_bytes(self._mac("uid", uid)[:16], "big"))

    @staticmethod
    def patient_key(ds: Any) -> str:
        """What identifies a patient before de-identification (ID, else name, else the study)."""
        for kw in ("PatientID", "PatientName", "StudyInstanceUID"):
            v = str(ds.get(kw, "") or "").strip()
            if v:
                return f"{kw}={v}"
        return "unknown"

    def deidentify(self, ds: Any, *, source: str = "") -> list[dict[str, Any]]:
        """De-identify `ds` in place; returns this dataset's audit entries (also kept in `.audit`)."""
        patient = self.patient_key(ds)
        ctx = {
            "patient": patient,
            "pseudonym": self.pseudonym(patient),
            "shift": self.date_shift_days(patient),
        }
        entries: list[dict[str, Any]] = []

        def note(elem: Any, action: str, new: Any, path: str) -> None:
            old = elem.value
            entries.append(
                {
                    "file": source,
                    "tag": f"({elem.tag.group:04X},{elem.tag.element:04X})",
                    "keyword": elem.keyword or "private",
                    "path": path,
                    "action": action,
                    "old_length": len(str(old)) if old is not None else 0,
                    "new": None if action in ("X", "Z") else str(new),
                }
            )

        self._walk(ds, ctx, note, "")
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            self._walk(meta, ctx, note, "file_meta.")
            if "MediaStorageSOPInstanceUID" in meta and "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = DEID_METHOD
        from pydicom.dataset import Dataset  # lazy: pydicom (~0.25 s) only to de-identify, not for keys

        codes = []
        for value, meaning in DEID_CODES:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = codes
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        entries.append({"file": source, "tag": "(0012,0062)", "keyword": "PatientIdentityRemoved",
                        "path": "", "action": "set", "old_length": 0, "new": "YES"})
        self.audit.extend(entries)
        return entries

    def _walk(self, ds: Any, ctx: dict[str, Any], note: Any, prefix: str, parent: str = "") -> None:
        to_delete = []
        for elem in list(ds):
            path = f"{prefix}{elem.keyword or elem.tag}"
            action = decide(elem, parent)
            if action == "walk":
                for i, item in enumerate(elem.value or []):
                    self._walk(item, ctx, note, f"{path}[{i}].", elem.keyword)
                continue
            if action == "K":
                continue
            if action == "X":
                note(elem, "X", None, path)
                to_delete.append(elem.tag)
            elif action == "Z":
                if elem.value not in (None, "", []):
                    note(elem, "Z", None, path)
                elem.value = [] if elem.VR == "SQ" else None
            elif action == "P":
                note(elem, "pseudonym", ctx["pseudonym"], path)
                elem.value = ctx["pseudonym"]
            elif action == "U":
                new = self._remap_uids(elem.value)
                if new != elem.value:
                    note(elem, "U", new, path)
                elem.value = new
            elif action == "S":
                new = _shift_date(elem.value, elem.VR, ctx["shift"])
                if new != elem.value:
                    note(elem, "shift", new, path)
                elem.value = new
        for tag in to_delete:
            del ds[tag]

    def _remap_uids(self, value: Any) -> Any:
        """Instance UIDs -> keyed replacements; registered standard UIDs (SOP classes...) stay."""
        if value in (None, ""):
            return value
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return [v if is_standard_uid(v) else self.uid(str(v)) for v in value]
        return value if is_standard_uid(value) else self.uid(str(value))


def is_standard_uid(value: Any) -> bool:
    """A UID registered in the DICOM standard (SOP class, transfer syntax, coding scheme...)."""
    from pydicom.uid import UID_dictionary  # lazy: pydicom (~0.25 s) only to de-identify, not for keys

    return str(value).strip() in UID_dictionary


def is_overlay_or_curve(tag: Any) -> bool:
    return tag.group in range(0x5000, 0x5100, 2) or tag.group in range(0x6000, 0x6100, 2)


def decide(elem: Any, parent: str = "") -> str:
    """The action for one element: X, Z, P (pseudonym), U, S (date shift), K (keep) or walk (SQ).

    Profile rows first (at any depth); then private tags, overlays and curves go; then the VR
    decides, with allow-lists for text and binary values (anything not known safe is removed).
    """
    if elem.tag.is_private or is_overlay_or_curve(elem.tag):
        return "X"
    kw = elem.keyword
    code = PROFILE.get(kw)
    if code is not None:
        return "P" if kw in PSEUDONYM_KEYWORDS else resolve_action(code, elem.VR, kw)
    vr = elem.VR
    if vr == "SQ":
        return "walk"
    if vr in TEXT_VRS:
        if kw in SAFE_TEXT or (kw in CODE_TEXT and parent in SAFE_CODE_SEQUENCES):
            return "K"
        return "X"
    if vr in ("DA", "DT"):
        return "S"
    if vr == "UI":
        return "U"
    if vr == "AS":
        return "X"
    if vr in BINARY_VRS and kw not in SAFE_BINARY:
        return "X"
    return "K"


IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "AccessionNumber", "PatientAddress", "PatientTelephoneNumbers",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "MedicalRecordLocator",
)
REDACTED = "[removed]"


def scrub_identifiers(text: str, ds: Any) -> str:
    """Report text with the header's own identifiers (names, IDs, birth date) replaced.

    Free text cannot be de-identified by a profile; this removes what the header says about the
    patient (every name part, ID and birth-date spelling) wherever it appears in the text. Other
    identifying free text (a relative's name, an address) is NOT detected.
    """
    needles: set[str] = set()
    for kw in IDENTIFYING_KEYWORDS:
        values = ds.get(kw)
        values = values.value if values is not None and hasattr(values, "value") else values
        if values in (None, ""):
            continue
        multi = isinstance(values, list | tuple) or type(values).__name__ == "MultiValue"
        for v in values if multi else [values]:
            parts = re.split(r"[\^=,\s]+", str(v))
            needles.update(p for p in parts if len(p) >= 2)
            if len(str(v).strip()) >= 3:
                needles.add(str(v).strip())
    birth = str(ds.get("PatientBirthDate", "") or "")
    if re.fullmatch(r"\d{8}", birth):
        y, m, d = birth[:4], birth[4:6], birth[6:]
        needles.update({birth, f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}"})
    for n in sorted(needles, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(n)}(?![A-Za-z0-9])", REDACTED, text, flags=re.IGNORECASE)
    return text


def _shift_date(value: Any, vr: str, days: int) -> Any:
    if value in (None, ""):
        return value
    s = str(value).strip()
    if vr == "DA":
        s = s.replace(".", "")  # ACR-NEMA style YYYY.MM.DD, still found in old files
    try:
        if vr == "DA":
            d = dt.datetime.strptime(s[:8], "%Y%m%d").date() + dt.timedelta(days=days)
            return d.strftime("%Y%m%d")
        d0 = dt.datetime.strptime(s[:8], "%Y%m%d").date() + dt.timedelta(days=days)
        return d0.strftime("%Y%m%d") + s[8:]
    except ValueError:
        return None  # an unparseable date cannot be shifted safely: empty it


def key_fingerprint(key: bytes) -> str:
    """A short public fingerprint of the key (recorded with a dataset; reveals nothing of the key)."""
    return hmac.new(key, b"sonofm-key-fingerprint", hashlib.sha256).hexdigest()[:16]


def source_id(key: bytes, rel: str) -> str:
    """Keyed hash of a source file's relative path: how outputs name a source without its name.

    Whoever holds the key maps it back by hashing their own file list (`sonofm ingest locate`).
    """
    return "F" + hmac.new(key, f"source:{rel}".encode(), hashlib.sha256).hexdigest()[:16]


def write_new_key(path: str | Path) -> bytes:
    """Create a random 32-byte (hex) key at `path`, readable by the owner only (mode 0600)."""
    p = Path(path)
    if p.exists():
        raise UserError(f"--new-key: {p} exists already; drop --new-key to reuse it, or name another file")
    key = secrets.token_hex(32).encode()
    atomic_write_bytes(p, key, mode=0o600)
    return key


def read_key(key_file: str | Path) -> bytes:
    """A key file's secret (>= 16 bytes); a missing file says how to create one."""
    p = Path(key_file)
    if not p.is_file():
        raise UserError(
            f"--key-file {p}: no such key file; add --new-key to create it (a random secret, "
            "mode 0600), or give the path of your existing key"
        )
    key = p.read_bytes().strip()
    if len(key) < 16:
        raise UserError(f"--key-file {p}: holds {len(key)} bytes; a key needs at least 16")
    return key


def load_or_create_key(key_file: str | Path | None, out_dir: str | Path, *, new_key: bool = False) -> bytes:
    """The HMAC key: `key_file` (created first when `new_key`), else `<out>/.sonofm-deid.key`.

    Re-running ingestion with the same key gives the same pseudonyms; keep the file secret and
    out of any dataset you share (a key beside the data lets anyone re-link pseudonyms).
    """
    if key_file is not None:
        if new_key:
            key = write_new_key(key_file)
            log.warning("created a new de-identification key at %s; keep it secret and reuse it", key_file)
            return key
        return read_key(key_file)
    p = Path(out_dir) / ".sonofm-deid.key"
    if p.is_file():
        return read_key(p)
    key = write_new_key(p)
    log.warning("created a new de-identification key at %s; keep it secret and reuse it", p)
    return key
