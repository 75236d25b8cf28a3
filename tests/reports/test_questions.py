"""Closed questions read as structured queries (reports/questions.py): labels, thresholds with
their direction and unit, choices, and the questions it must refuse to read (negated, either/or,
open). The questions the training conversations ask are read back in tests/vlm/test_answers.py."""

from __future__ import annotations

import pytest

from sonofm.reports.questions import ClosedQuestion, read_closed_question


@pytest.mark.parametrize(
    ("question", "labels"),
    [
        ("Is this an ultrasound of the thyroid?", (("organ", "thyroid"),)),
        ("Does this image show the kidney?", (("organ", "kidney"),)),
        ("Was this image acquired in the parasternal long-axis view?", (("view", "PLAX"),)),
        ("Is this an apical four-chamber view?", (("view", "A4C"),)),
        ("Is the lesion hypoechoic?", (("echogenicity", "hypoechoic"),)),
        ("Can you see posterior acoustic shadowing? Answer yes or no.", (("posterior", "shadowing"),)),
        ("Is there a pericardial effusion?", (("echo", "pericardial_effusion"),)),
        ("Is there a cyst?", (("diagnosis", "cyst"),)),
        # several labels: all of them are asked
        ("Is this kidney normal?", (("organ", "kidney"), ("diagnosis", "normal"))),
    ],
)
def test_yes_no_questions_on_labels(question, labels):
    assert read_closed_question(question) == ClosedQuestion("labels", labels=labels)


@pytest.mark.parametrize(
    ("question", "measurement", "threshold", "above", "inclusive"),
    [
        ("Is the LV ejection fraction below 50 %?", "lvef_pct", 50.0, False, False),
        ("Is the LV ejection fraction less than 50%?", "lvef_pct", 50.0, False, False),
        ("Is the LVEF > 50 %?", "lvef_pct", 50.0, True, False),
        ("Is the LVEF at least 55%?", "lvef_pct", 55.0, True, True),
        ("Is the LVEF <= 40%?", "lvef_pct", 40.0, False, True),
        (
            "Is the measured LA volume index above 34 mL/m2? Answer yes or no.",
            "lavi_ml_m2",
            34.0,
            True,
            False,
        ),
        # the value is read in the measurement's own unit: 1.2 cm is 12 mm
        ("Is the AP diameter above 1.2 cm?", "lesion_height_mm", 12.0, True, False),
    ],
)
def test_threshold_questions_read_direction_and_unit(question, measurement, threshold, above, inclusive):
    q = read_closed_question(question)
    assert q is not None and q.kind == "threshold"
    assert (q.measurement, q.threshold, q.above, q.inclusive) == (measurement, threshold, above, inclusive)


def test_choices_keep_the_option_text_and_map_each_option():
    q = read_closed_question(
        "Which view is this? Options: parasternal long-axis view, apical four-chamber view."
    )
    assert q == ClosedQuestion(
        "choice",
        options=(
            ("parasternal long-axis view", ("view", "PLAX")),
            ("apical four-chamber view", ("view", "A4C")),
        ),
    )
    q = read_closed_question("Choose the lesion's echogenicity: very hypoechoic, anechoic, isoechoic.")
    assert q is not None and [lab for _, lab in q.options] == [
        ("echogenicity", "very_hypoechoic"),
        ("echogenicity", "anechoic"),
        ("echogenicity", "isoechoic"),
    ]


@pytest.mark.parametrize(
    "question",
    [
        "Is the lesion not hypoechoic?",  # negated: a yes/no would be ambiguous
        "Is the lesion hypoechoic or isoechoic?",  # either/or is not a yes/no
        "What is the LVEF?",  # open
        "Is the LVEF normal?",  # a measurement without a value
        "Which view is this? Options: apical four-chamber view, hypoechoic.",  # options of two kinds
        "Is this a good image?",  # nothing the taxonomy knows
        "",
    ],
)
def test_questions_it_cannot_read_are_left_to_the_language_model(question):
    assert read_closed_question(question) is None
