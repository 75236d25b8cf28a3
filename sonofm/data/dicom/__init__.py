"""Scanner DICOM -> de-identified sonofm datasets.

- `read`: decode every frame (pydicom + pylibjpeg codecs), colour -> grayscale, colour-Doppler
  detection, pixel spacing from the Sequence of Ultrasound Regions, scan-region detection.
- `deid`: PS3.15 Basic Application Level Confidentiality Profile with keyed pseudonyms, UID
  remapping and per-patient date shifts; every change is audited.
- `burnin`: burned-in text detection and masking in the pixels.
- `reports`: CSV/JSONL report pairing by accession number or StudyInstanceUID.
- `ingest`: the resumable `sonofm ingest dicom` job.
"""

from __future__ import annotations
