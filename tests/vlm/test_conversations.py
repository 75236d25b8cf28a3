"""Conversation builder: placeholders, answers consistent with the manifest, determinism, IO."""

from __future__ import annotations

import json
import re

import pytest

from sonofm import taxonomy as tx
from sonofm.data.manifest import read_manifest
from sonofm.errors import DataError, UserError
from sonofm.vlm.conversations import (
    DEFAULT_REPORT_QUESTION,
    IMAGE_TOKEN,
    conversations_from_dataset,
    format_measurement,
    format_report,
    read_sharegpt,
    write_sharegpt,
)


@pytest.fixture(scope="module")
def records(sim_dir):
    return conversations_from_dataset(sim_dir, None, seed=0, questions_per_image=3)


@pytest.fixture(scope="module")
def rows(sim_dir):
    df = read_manifest(sim_dir)
    return {r["id"]: r for _, r in df.iterrows()}


def test_default_question_matches_model_prompt():
    from sonofm.models.vlm_prompt import DEFAULT_QUESTION

    assert DEFAULT_REPORT_QUESTION == DEFAULT_QUESTION


def test_every_task_present_and_placeholders_match(records, sim_dir):
    tasks = {r["meta"]["task"] for r in records}
    assert tasks == {"report", "diagnosis", "vqa_closed", "vqa_open", "multi_image"}
    for r in records:
        turns = r["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"]
        n_ph = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
        assert n_ph == len(r["image"]) >= 1
        assert turns[0]["value"].startswith(f"{IMAGE_TOKEN}\n" * len(r["image"]))
        assert IMAGE_TOKEN not in turns[1]["value"] and turns[1]["value"].strip()
        for p in r["image"]:
            assert (sim_dir / p).is_file()


def test_report_and_diagnosis_answers_match_rows(records, rows):
    for r in records:
        row = rows.get(r["meta"]["source_id"]) if isinstance(r["meta"]["source_id"], str) else None
        ans = r["conversations"][1]["value"]
        if r["meta"]["task"] == "report":
            assert ans == format_report(row["report"])
            assert ans.startswith("Findings: ") and "\nImpression: " in ans
        elif r["meta"]["task"] == "diagnosis":
            if row["region"] == "heart":
                found = row["structured"]["findings"]
                present = [f for f in found if f["dimension"] == "echo" and f["status"] == "present"]
                for f in present:
                    assert tx.ECHO_FINDINGS[f["tag"]].phrase in ans.lower()
                if not present:
                    assert ans == "No echocardiographic abnormality."
            else:
                assert tx.get_tag("diagnosis", row["diagnosis"]).phrase.lower() in ans.lower()
                if row["malignant"] is True:
                    assert "malignancy" in ans
                elif row["malignant"] is False:
                    assert "benign" in ans


def test_closed_answers_consistent_with_manifest(records, rows):
    kinds = set()
    for r in (x for x in records if x["meta"]["task"] == "vqa_closed"):
        m, row, ans = r["meta"], rows[r["meta"]["source_id"]], r["conversations"][1]["value"]
        kinds.add(m["kind"])
        present = set((row["attributes"] or {}).get(m.get("dimension"), []) or [])
        if m["kind"] == "attribute":
            assert ans == ("Yes" if m["tag"] in present else "No"), r
        elif m["kind"] == "attribute_mc":
            assert m["tag"] in present and ans == tx.get_tag(m["dimension"], m["tag"]).phrase
            assert ans in r["conversations"][0]["value"]
        elif m["kind"] == "threshold":
            v = tx.round_measurement(m["measurement"], row["measurements"][m["measurement"]])
            truth = v > m["threshold"] if m["above"] else v < m["threshold"]
            assert ans == ("Yes" if truth else "No")
            assert format_measurement(m["measurement"], m["threshold"]) in r["conversations"][0]["value"]
        elif m["kind"] == "view":
            assert ans == ("Yes" if m["view"] == row["view"] else "No")
        elif m["kind"] == "view_mc":
            assert ans == tx.VIEWS[row["view"]].phrase
        elif m["kind"] == "organ":
            assert ans == ("Yes" if m["organ"] == row["organ"] else "No")
    assert {"attribute", "threshold", "organ"} <= kinds
    answers = [x["conversations"][1]["value"] for x in records if x["meta"]["task"] == "vqa_closed"]
    assert "Yes" in answers and "No" in answers


def test_open_answers_consistent_with_manifest(records, rows):
    for r in (x for x in records if x["meta"]["task"] == "vqa_open"):
        m, row, ans = r["meta"], rows[r["meta"]["source_id"]], r["conversations"][1]["value"]
        if m["kind"] == "attribute":
            want = sorted(row["attributes"][m["dimension"]])
            assert ans == " and ".join(tx.get_tag(m["dimension"], t).phrase for t in want)
        elif m["kind"] == "measurement":
            mid = m["measurement"]
            num = float(re.match(r"-?[\d.]+", ans).group())
            assert num == pytest.approx(tx.round_measurement(mid, row["measurements"][mid]))
            assert ans.endswith(tx.MEASUREMENTS[mid].unit)
        elif m["kind"] == "view":
            assert ans == tx.VIEWS[row["view"]].phrase
        elif m["kind"] == "organ":
            assert ans == tx.get_organ(row["organ"]).phrase


def test_multi_image_records_are_one_study(records, rows):
    multi = [r for r in records if r["meta"]["task"] == "multi_image"]
    assert multi
    for r in multi:
        ids = r["meta"]["source_id"]
        assert 2 <= len(ids) <= 4
        assert len({rows[i]["study_id"] for i in ids}) == 1
        assert [rows[i]["image"] for i in ids] == r["image"]
        assert r["conversations"][1]["value"].startswith("Findings: ")


def test_deterministic_per_seed(sim_dir):
    a = conversations_from_dataset(sim_dir, "train", seed=7)
    b = conversations_from_dataset(sim_dir, "train", seed=7)
    c = conversations_from_dataset(sim_dir, "train", seed=8)
    assert a == b
    assert [x["conversations"] for x in a] != [x["conversations"] for x in c]


def test_format_report():
    assert format_report("Findings:  A  cyst.\n\nImpression: Cyst.") == "Findings: A cyst.\nImpression: Cyst."
    assert format_report("A simple cyst.") == "Findings: A simple cyst."
    assert format_report("") == ""


def test_unknown_task_is_a_user_error(sim_dir):
    with pytest.raises(UserError, match="unknown conversation task"):
        conversations_from_dataset(sim_dir, "train", seed=0, tasks=("report", "captions"))


def test_sharegpt_round_trip_and_echovlm_forms(records, tmp_path):
    path = write_sharegpt(records[:5], tmp_path / "conv.json")
    assert read_sharegpt(path) == records[:5]
    jl = write_sharegpt(records[:3], tmp_path / "conv.jsonl")
    assert len(jl.read_text().splitlines()) == 3 and read_sharegpt(jl) == records[:3]
    # EchoVLM / LLaVA variants: image as a string, messages with roles, placeholder missing
    raw = [
        {
            "id": "a",
            "image": "x.png",
            "conversations": [{"from": "human", "value": "Describe."}, {"from": "gpt", "value": "A cyst."}],
        },
        {
            "id": "b",
            "images": ["x.png", "y.png"],
            "messages": [
                {"role": "system", "content": "You are a sonographer."},
                {"role": "user", "content": "<image>\n<image>\nReport?"},
                {"role": "assistant", "content": "Normal."},
            ],
        },
    ]
    (tmp_path / "echo.json").write_text(json.dumps(raw))
    a, b = read_sharegpt(tmp_path / "echo.json")
    assert a["image"] == ["x.png"] and a["conversations"][0]["value"] == "<image>\nDescribe."
    assert [t["from"] for t in b["conversations"]] == ["human", "gpt"] and len(b["image"]) == 2
    bad = [
        {
            "id": "c",
            "image": ["x.png"],
            "conversations": [{"from": "human", "value": "<image><image>?"}, {"from": "gpt", "value": "no"}],
        }
    ]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"bad.json\[0\]: 2 <image> placeholders but 1 images"):
        read_sharegpt(tmp_path / "bad.json")


def test_report_questions_are_distinct_wordings(sim_dir):
    recs = conversations_from_dataset(sim_dir, "train", seed=1, tasks=("report",), report_questions=3)
    by_image: dict[str, list[dict]] = {}
    for r in recs:
        by_image.setdefault(r["image"][0], []).append(r)
    for group in by_image.values():
        assert len(group) == 3
        assert len({g["conversations"][0]["value"] for g in group}) == 3
        assert len({g["conversations"][1]["value"] for g in group}) == 1
    assert len({r["id"] for r in recs}) == len(recs)
