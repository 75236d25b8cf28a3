"""The parser never raises, whatever the text; finding-like unmapped words are reported."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sonofm.reports import ParseResult, parse_report
from sonofm.reports.parser import _parse
from sonofm.taxonomy import REGIONS

_WORDS = st.sampled_from(
    [
        "no",
        "not seen",
        "possible",
        "?",
        "nodule",
        "1.2 x 0.8 cm",
        "EF",
        "55-60%",
        "but",
        ";",
        ",",
        ".",
        "LVIDd",
        "5.1",
        "cm",
        "mm",
        "hypoechoic",
        "Findings:",
        "Impression:",
        "w/",
        "w/o",
        "x",
        "-",
        "TI-RADS",
        "BI-RADS 4",
        "E/e'",
        "\n",
        "LV is",
        "mildly",
        "dilated",
        "septation",
        "shadowing",
        "ééé",
        "𝔘𝔖",
        "0",
        "00000000000000",
    ]
)


def _parse_strict(text, region=None):
    """parse_report's inner function: the public one catches everything, which would hide bugs here."""
    return _parse(text, region)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_never_raises_on_arbitrary_text(text):
    r = _parse_strict(text)
    assert parse_report(text).to_dict() == r.to_dict()
    assert isinstance(r, ParseResult)
    assert isinstance(r.unknown_terms, list)
    r.to_dict()


@settings(max_examples=200, deadline=None)
@given(st.lists(_WORDS, max_size=60).map(" ".join), st.sampled_from([None, *REGIONS]))
def test_never_raises_on_report_like_text(text, region):
    r = _parse_strict(text, region)
    assert r.study.region in (*REGIONS, "unknown")


def test_edge_inputs():
    assert _parse_strict("", None).study.findings == []
    assert parse_report(None).study.findings == []  # type: ignore[arg-type]  # not text: still no exception
    long = "Hypoechoic nodule, no shadowing. " * 2000
    r = parse_report(long)
    assert {(f.dimension, f.tag) for f in r.study.findings} >= {("echogenicity", "hypoechoic")}
    assert parse_report("\x00\ufffd\u202e").unknown_terms == []


def test_unknown_terms_reported():
    r = parse_report(
        "Isoechoic nodule with hyperechogenic halo, coarse calcific rind, no nephrocalcinosis. Vmax 35 mmHg."
    )
    joined = " | ".join(r.unknown_terms).lower()
    assert "nephrocalcinosis" in joined
    assert "vmax" in joined
    assert "calcific" in joined


def test_reports_package_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, sonofm.reports, sonofm.reports.prompts; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_region_is_validated_and_restricts_organs():
    import pytest

    with pytest.raises(ValueError, match="thyroid"):
        parse_report("Nodule.", region="elbow")
    r = parse_report("The liver is unremarkable. Left lobe: hypoechoic nodule 9 mm.", region="thyroid")
    assert r.study.organ == "thyroid"
    assert {(f.dimension, f.tag) for f in r.study.findings} == {
        ("echogenicity", "hypoechoic"),
        ("diagnosis", "nodule"),
    }
