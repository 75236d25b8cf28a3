"""Every ultrasound file of pydicom and pydicom-data leaves no identifier under the output folder.

Checked independently of sonofm's tables: every text value of each original that is not device or
code text (names, IDs, institutions, descriptions, comments, instance UIDs), and each file's name,
is searched for in every byte, name and (with plain pydicom) DICOM element under the output.
"""

from __future__ import annotations

from tests.security.phi import find_phi
from tests.security.test_deid_phi import _identifying_strings


def test_every_testdata_ultrasound_file_leaves_no_identifier(ingested, us_files):
    _, out, report, _ = ingested
    assert report.ingested_files == len(us_files)
    phi: set[str] = set()
    for f in us_files:
        phi |= _identifying_strings(f)
    assert len(phi) > 20
    names = tuple(sorted(phi | {f.stem for f in us_files}))
    assert find_phi(out, names) == []
