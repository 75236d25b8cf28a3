"""`sonofm serve` findings come from one region's vocabulary, with that region's probability."""

from __future__ import annotations

import numpy as np
import pytest

from sonofm import taxonomy as tx
from sonofm.errors import UserError
from sonofm.reports import prompts as P
from sonofm.serve.analyze import Analyzer, ForwardOut, Head, TextBank, _tag_label, in_region_vocabulary


def _analyzer() -> Analyzer:
    """An Analyzer with a bank of every real finding and a region head, but no model."""
    regions = list(tx.REGIONS)
    findings = [(d, t, _tag_label(d, t)) for d, t in P.all_prompt_pairs(include_tags=True)]
    bank = TextBank(
        heads=[Head("region", regions, regions, 0, len(regions))],
        class_w=np.zeros((len(regions), 4), np.float32),
        findings=findings,
        pair_w=np.zeros((2 * len(findings), 4), np.float32),
        logit_scale=1.0,
        n_prompts=0,
    )
    a = Analyzer.__new__(Analyzer)
    a.bank = bank
    return a


def _out(a: Analyzer, region: str, confidence: float = 4.0) -> ForwardOut:
    logits = np.zeros(len(tx.REGIONS))
    logits[list(tx.REGIONS).index(region)] = confidence
    # every finding strongly "present", so nothing is hidden by a low probability
    pairs = np.tile([3.0, 0.0], len(a.bank.findings))
    return ForwardOut(np.zeros(4), logits, pairs, None, None, 1, 0.0)


def test_breast_image_lists_no_heart_or_thyroid_only_findings():
    a = _analyzer()
    res = a.predictions(_out(a, "breast"))
    labels = {f["label"] for f in res["findings"]}
    tags = {(f["dimension"], f["tag"]) for f in res["findings"]}
    assert "extrathyroidal extension" not in labels
    assert not any(d == "echo" for d, _ in tags)  # no "reduced left ventricular ejection fraction"
    assert ("margin", "spiculated") in tags and ("shape", "oval") in tags
    fr = res["findings_region"]
    assert fr["region"] == "breast" and fr["source"] == "predicted"
    assert fr["probability"] == res["region"]["probability"] and fr["probability"] > 0.5


def test_given_region_overrides_the_prediction_and_shows_its_own_probability():
    a = _analyzer()
    res = a.predictions(_out(a, "breast"), region="heart")
    assert {f["dimension"] for f in res["findings"]} == {"echo"}
    assert len(res["findings"]) == len(tx.ECHO_FINDINGS)
    fr = res["findings_region"]
    assert fr["region"] == "heart" and fr["source"] == "given"
    heart_p = next(s["probability"] for s in res["region"]["scores"] if s["tag"] == "heart")
    assert fr["probability"] == heart_p < 0.5
    thyroid = a.predictions(_out(a, "thyroid"))
    assert "extrathyroidal extension" in {f["label"] for f in thyroid["findings"]}
    with pytest.raises(UserError, match="unknown region"):
        a.predictions(_out(a, "breast"), region="elbow")


def test_every_region_has_findings_and_echo_stays_in_the_heart():
    for region in tx.REGIONS:
        allowed = [(d, t) for d, t in P.all_prompt_pairs() if in_region_vocabulary(region, d, t)]
        assert allowed, region
        assert all((d == "echo") == (region == "heart") for d, _ in allowed), region
