"""ConText: trigger scope, terminators, pseudo-triggers, uncertainty as its own status."""

from __future__ import annotations

import pytest

from sonofm.reports.negation import ConText, ContextRule
from sonofm.reports.schema import Status
from sonofm.reports.text import tokenize


def _status(text: str, target: str) -> Status:
    toks = tokenize(text)
    norms = [t.norm for t in toks]
    tt = [t.norm for t in tokenize(target)]
    for i in range(len(norms)):
        if norms[i : i + len(tt)] == tt:
            return ConText().assign(toks, [(i, i + len(tt))])[0]
    raise AssertionError(f"{target!r} not in {text!r}")


@pytest.mark.parametrize(
    ("text", "target", "status"),
    [
        ("No shadowing.", "shadowing", Status.ABSENT),
        ("There is no evidence of shadowing.", "shadowing", Status.ABSENT),
        ("no shadowing or enhancement", "enhancement", Status.ABSENT),  # scope over an "or" list
        ("no calcifications, shadowing or flow", "flow", Status.ABSENT),  # comma inside an "or" list
        ("no calcifications, peripheral flow", "flow", Status.PRESENT),  # comma ends the scope
        ("No internal flow but peripheral flow present", "peripheral flow", Status.PRESENT),  # terminator
        ("No internal flow however peripheral flow", "peripheral flow", Status.PRESENT),
        ("Shadowing is not seen.", "shadowing", Status.ABSENT),  # backward trigger
        ("Septations not identified", "septations", Status.ABSENT),
        ("Nodule, septations not identified", "nodule", Status.PRESENT),  # backward scope stops at comma
        ("Negative for flow.", "flow", Status.ABSENT),
        ("Free of debris.", "debris", Status.ABSENT),
        ("Absence of flow.", "flow", Status.ABSENT),
        ("Possible septation.", "septation", Status.UNCERTAIN),
        ("Cannot exclude microcalcifications.", "microcalcifications", Status.UNCERTAIN),
        ("Microcalcifications cannot be excluded.", "microcalcifications", Status.UNCERTAIN),
        ("Suspicious for debris.", "debris", Status.UNCERTAIN),
        ("May represent debris.", "debris", Status.UNCERTAIN),
        ("Septation?", "septation", Status.UNCERTAIN),
        ("Questionable flow.", "flow", Status.UNCERTAIN),
        ("No change in the debris.", "debris", Status.PRESENT),  # pseudo-trigger
        ("Not only debris but septations.", "debris", Status.PRESENT),
        ("Debris is present.", "debris", Status.PRESENT),
        ("Lesion without shadowing; flow present.", "flow", Status.PRESENT),  # ";" terminates
        ("Solid nodule without calcification with internal flow", "internal flow", Status.PRESENT),
        ("No definite shadowing.", "shadowing", Status.ABSENT),
        ("possible debris, no flow", "flow", Status.ABSENT),  # nearest trigger wins
    ],
)
def test_context(text, target, status):
    assert _status(text, target) is status


def test_custom_rules_and_scope_limit():
    ctx = ConText([ContextRule("nix", "NEGATED_EXISTENCE", "forward", max_scope=1)])
    toks = tokenize("nix flow debris")
    assert ctx.assign(toks, [(1, 2), (2, 3)]) == [Status.ABSENT, Status.PRESENT]


def test_trigger_inside_target_is_ignored():
    # a target span is never read as a trigger ("no" inside the target itself)
    toks = tokenize("no colour flow")
    assert ConText().assign(toks, [(0, 3)]) == [Status.PRESENT]
