"""Hard negatives for caption training: written as captions, and the same every epoch."""

from __future__ import annotations

from types import SimpleNamespace

from sonofm.losses.compose import parse_loss_spec
from sonofm.pretrain.objective import ObjectiveCollate
from sonofm.reports import Study
from sonofm.reports.captions import contrastive_caption
from sonofm.reports.schema import Finding

STUDY = Study(
    region="breast",
    organ="breast",
    findings=[
        Finding("diagnosis", "mass"),
        Finding("echogenicity", "hypoechoic"),
        Finding("shape", "irregular"),
        Finding("margin", "spiculated"),
        Finding("posterior", "shadowing"),
    ],
)


def _negatives(text: str, epoch: int) -> list[str]:
    dataset = SimpleNamespace(epoch=epoch)
    collate = ObjectiveCollate(
        parse_loss_spec("clip+negation"),
        tokenizer=lambda texts: {},
        negatives=3,
        structured={"s1": STUDY.to_dict()},
        dataset=dataset,
        text=text,
    )
    texts, valid = collate._negatives(["s1"])
    return [t for t, ok in zip(texts, valid[0].tolist(), strict=True) if ok]


def test_caption_negatives_are_captions_that_differ_from_the_positive() -> None:
    negs = _negatives("caption", epoch=0)
    positive = contrastive_caption(STUDY)
    assert negs and all(n.startswith("Ultrasound of the breast:") and n != positive for n in negs)


def test_caption_negatives_do_not_change_with_the_epoch_but_report_negatives_do() -> None:
    assert _negatives("caption", 0) == _negatives("caption", 5)
    reports = [_negatives("report", e) for e in range(4)]
    assert any(r != reports[0] for r in reports[1:])


def test_caption_negatives_are_written_once_per_caption_and_kept(monkeypatch) -> None:
    import sonofm.pretrain.objective as objective

    calls: list[str] = []
    original = objective._negated_contrastive_captions
    monkeypatch.setattr(
        objective, "_negated_contrastive_captions", lambda s, r, k: calls.append("w") or original(s, r, k)
    )
    other = Study(
        region="breast",
        organ="breast",
        findings=[Finding("diagnosis", "cyst"), Finding("echogenicity", "anechoic")],
    )
    collate = ObjectiveCollate(
        parse_loss_spec("clip+negation"),
        tokenizer=lambda texts: {},
        negatives=3,
        # s1 and s2 share a caption (their measurements, which captions leave out, may differ)
        structured={"s1": STUDY.to_dict(), "s2": STUDY.to_dict(), "s3": other.to_dict()},
        dataset=SimpleNamespace(epoch=0),
        text="caption",
    )
    warmed = collate.fixed_texts()  # the training process lists them before the loader starts
    assert len(calls) == 2  # one per caption
    first = collate._negatives(["s1", "s2", "s3"])
    collate.dataset.epoch = 3
    again = collate._negatives(["s3", "s2", "s1"])
    assert len(calls) == 2  # nothing written twice, in any epoch
    assert first[0][:3] == first[0][3:6] == again[0][3:6] == again[0][6:]  # same caption, same negatives
    assert again[0][:3] == first[0][6:] and first[0][6:] != first[0][:3]
    assert set(first[0]) <= set(warmed)
