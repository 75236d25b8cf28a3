"""Numbers and units: dimensions, ranges, cm -> mm, formatting that parses back exactly."""

from __future__ import annotations

import pytest

from sonofm.reports import parse_report
from sonofm.reports.measurements import find_quantities, format_dims, format_length


def test_dimensions_cm_to_mm():
    m = parse_report("A 1.2 x 0.8 x 0.9 cm hypoechoic nodule.").study.measurements
    assert m == pytest.approx({"lesion_width_mm": 12.0, "lesion_height_mm": 8.0, "lesion_length_mm": 9.0})


def test_range_is_midpoint():
    assert parse_report("EF 55-60%.").study.measurements == {"lvef_pct": 57.5}
    assert parse_report("LVEF 55 to 60 %").study.measurements == {"lvef_pct": 57.5}


@pytest.mark.parametrize(
    ("text", "mid", "value"),
    [
        ("LVIDd 5.1 cm", "lvidd_mm", 51.0),
        ("LVIDd 51 mm", "lvidd_mm", 51.0),
        ("LVIDd 5.1", "lvidd_mm", 51.0),  # unitless length that only fits as cm
        ("E/e' 15", "e_e_prime_ratio", 15.0),
        ("TAPSE 1.9cm", "tapse_mm", 19.0),
        ("LAVI 40 ml/m2", "lavi_ml_m2", 40.0),
        ("IMT 0.9 mm", "imt_mm", 0.9),
        ("LV end-diastolic volume 120 mL", "lv_edv_ml", 120.0),
        ("The LV end-diastolic diameter measures 61 mm.", "lvidd_mm", 61.0),
        ("LVEF is estimated at 35%.", "lvef_pct", 35.0),
    ],
)
def test_named_measurements(text, mid, value):
    assert parse_report(text).study.measurements == pytest.approx({mid: value})


def test_incompatible_unit_is_not_stored():
    assert parse_report("LVEF 35 mm").study.measurements == {}


def test_assessment_numbers_are_not_sizes():
    st = parse_report("Hypoechoic mass, BI-RADS 4A. TR3").study
    assert st.measurements == {}
    assert st.assessment == {"BI-RADS": "4A", "TI-RADS": "TR3"}


def test_quantity_shapes():
    q = find_quantities("12mm x 8mm and 3-4 mm, TR4, A4C")
    assert [x.values for x in q] == [(12.0, 8.0), (3.5,)]
    assert q[1].is_range


@pytest.mark.parametrize("mm", [12.0, 61.0, 5.0, 108.0])
@pytest.mark.parametrize("use_cm", [False, True])
def test_format_parses_back(mm, use_cm):
    txt = format_length(mm, 0, use_cm)
    q = find_quantities(txt)[0]
    assert q.value_in("mm")[0] == pytest.approx(mm)
    dims = format_dims([mm, mm / 2, 7.0], 1, use_cm)
    assert find_quantities(dims)[0].value_in("mm") == pytest.approx((mm, mm / 2, 7.0))
