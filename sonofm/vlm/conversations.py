"""ShareGPT-style instruction conversations built from a dataset directory (docs/methods.md section 5).

A record is ``{"id", "image": [relative paths], "conversations": [{"from": "human"|"gpt",
"value"}]}``, the JSON EchoVLM trains on; each user turn starts with one ``<image>`` line per
image (the layout `sonofm.models.vlm_prompt.render_prompt` builds at inference), so the number
of placeholders always equals the number of images.

Task families (``tasks=``), every answer derived from the manifest row, never from free text:

- ``report``: write the report; the answer is the row's report as "Findings: ...\\nImpression: ...".
- ``diagnosis``: the T1 diagnosis (with benign/malignant when known), or the graded echo findings.
- ``vqa_closed``: yes/no on attribute tags, measurement thresholds, views and organs, and multiple
  choice on attribute values and views (one option is the true value, the rest are values the
  row does not have).
- ``vqa_open``: attribute values, measurement values with units, view and organ names.
- ``multi_image``: all images (up to ``max_images``) of one ``study_id`` -> the study's report
  (written by `sonofm.reports.write_report` from the shared structured study, view/frame removed,
  measurements merged over the images).

Question wording is drawn from templates with a generator seeded by ``seed``, so the same call
gives the same records.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sonofm import taxonomy as tx
from sonofm.atomic import atomic_write_text
from sonofm.data.importers.sharegpt import read_json_records
from sonofm.errors import DataError, UserError
from sonofm.reports import Study, write_report
from sonofm.taxonomy.tables import frozen, load

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"  # same string as sonofm.models.vlm_prompt.IMAGE_TOKEN (kept torch-free here)
TASKS: tuple[str, ...] = ("report", "diagnosis", "vqa_closed", "vqa_open", "multi_image")
# The dimensions asked about in VQA (diagnosis/organ/body_system have their own questions).
VQA_DIMENSIONS: tuple[str, ...] = ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity")

# The question wording is data (questions.toml beside this module): templates per kind of question.
_QUESTIONS = frozen(load("questions", Path(__file__).parent))
REPORT_QUESTIONS: tuple[str, ...] = _QUESTIONS["report"]
# The first report template: `SonoVLM.chat(question=None)` asks exactly this
# (sonofm.models.vlm_prompt.DEFAULT_QUESTION).
DEFAULT_REPORT_QUESTION = REPORT_QUESTIONS[0]
MULTI_QUESTIONS: tuple[str, ...] = _QUESTIONS["multi"]
DIAGNOSIS_QUESTIONS: tuple[str, ...] = _QUESTIONS["diagnosis"]
ECHO_DIAGNOSIS_QUESTIONS: tuple[str, ...] = _QUESTIONS["echo_diagnosis"]
DIMENSION_NOUNS: dict[str, str] = _QUESTIONS["dimension_nouns"]
# yes/no wording by grammar: adjectives (oval, hypoechoic, solid) vs nouns (spiculated margins, debris)
ADJ_TAG_QUESTIONS: tuple[str, ...] = _QUESTIONS["adj_tag"]
NOUN_TAG_QUESTIONS: tuple[str, ...] = _QUESTIONS["noun_tag"]
_ADJ_DIMS = ("shape", "echogenicity")
_ADJ_TAGS = {("internal", t) for t in ("solid", "cystic", "mixed_cystic_solid", "spongiform")} | {
    ("vascularity", "avascular")
}
OPEN_DIM_QUESTIONS: tuple[str, ...] = _QUESTIONS["open_dim"]
MC_DIM_QUESTIONS: tuple[str, ...] = _QUESTIONS["mc_dim"]
THRESHOLD_QUESTIONS: tuple[str, ...] = _QUESTIONS["threshold"]
OPEN_MEASURE_QUESTIONS: tuple[str, ...] = _QUESTIONS["open_measure"]
VIEW_YESNO_QUESTIONS: tuple[str, ...] = _QUESTIONS["view_yesno"]
VIEW_OPEN_QUESTIONS: tuple[str, ...] = _QUESTIONS["view_open"]
VIEW_MC_QUESTIONS: tuple[str, ...] = _QUESTIONS["view_mc"]
ORGAN_YESNO_QUESTIONS: tuple[str, ...] = _QUESTIONS["organ_yesno"]
ORGAN_OPEN_QUESTIONS: tuple[str, ...] = _QUESTIONS["organ_open"]


# ------------------------------------------------------------------ small helpers
def _present(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, float) and v != v:
        return False
    return not (isinstance(v, str) and not v.strip())


def _mapping(v: Any) -> dict:
    return dict(v) if isinstance(v, dict) else {}


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _user(text: str, n_images: int) -> dict[str, str]:
    """A user turn with one ``<image>`` line per image in front of the question."""
    return {"from": "human", "value": f"{IMAGE_TOKEN}\n" * n_images + text}


def _conv(rid: str, images: list[str], pairs: list[tuple[str, str]], meta: dict[str, Any]) -> dict[str, Any]:
    """A record; ``meta`` (task, region, question details) is an extra key ShareGPT readers ignore."""
    turns: list[dict[str, str]] = []
    for k, (q, a) in enumerate(pairs):
        turns.append(_user(q, len(images)) if k == 0 else {"from": "human", "value": q})
        turns.append({"from": "gpt", "value": a})
    return {"id": rid, "image": list(images), "conversations": turns, "meta": meta}


def _meta(row: pd.Series, task: str, *, single_image: bool = True, **extra: Any) -> dict[str, Any]:
    """Task, region, source id and, for a one-image record, the image's labels (`labels_of_row`)."""
    region = row.get("region")
    meta = {"task": task, "region": region if _present(region) else None, "source_id": row["id"], **extra}
    if single_image:
        meta["labels"] = labels_of_row(row)
    return meta


def _str_or_none(v: Any) -> str | None:
    return str(v).strip() if _present(v) else None


def labels_of_row(row: pd.Series | dict[str, Any]) -> dict[str, Any]:
    """What a manifest row says its image shows, in the format of the VLM's findings prompt
    (`sonofm.models.vlm_findings`): ``{"organ", "view", "diagnosis": str | None, "attributes":
    {dim: [tags]} (descriptor dimensions with tags only), "echo": [present echo findings] | None}``.

    ``view`` None means the row has none (a breast scan); ``echo`` None means the row has no echo
    findings at all, [] that every one it lists is absent.

    Also ``"measurements": {id: value}`` and ``"sex"``: the study context a report is written
    from (`sonofm.models.vlm_context`).
    """
    attrs = _mapping(row.get("attributes"))
    tags = {d: [str(t) for t in attrs.get(d)] for d in VQA_DIMENSIONS if attrs.get(d) is not None}
    echo = _echo_findings(row)
    measurements = {str(k): float(v) for k, v in _mapping(row.get("measurements")).items() if _finite(v)}
    return {
        "organ": _str_or_none(row.get("organ")),
        "view": _str_or_none(row.get("view")),
        "diagnosis": _str_or_none(row.get("diagnosis")),
        "attributes": {d: t for d, t in tags.items() if t},
        "echo": None
        if echo is None
        else sorted({str(f["tag"]) for f in echo if f.get("status") == "present"}),
        "measurements": measurements,
        "sex": _str_or_none(row.get("sex")),
    }


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


_IMPRESSION_RE = re.compile(r"\bimpression\s*:", re.IGNORECASE)
_FINDINGS_RE = re.compile(r"^\s*findings\s*:\s*", re.IGNORECASE)


def format_report(text: str) -> str:
    """A report as ``"Findings: ...\\nImpression: ..."`` (whitespace collapsed within sections).

    Text without section headers becomes the findings; a missing impression is left out.
    """
    text = str(text or "").strip()
    if not text:
        return ""
    m = _IMPRESSION_RE.search(text)
    findings, impression = (text[: m.start()], text[m.end() :]) if m else (text, "")
    findings = " ".join(_FINDINGS_RE.sub("", findings).split())
    impression = " ".join(impression.split())
    out = f"Findings: {findings}" if findings else ""
    if impression:
        out = f"{out}\nImpression: {impression}" if out else f"Impression: {impression}"
    return out


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _tag_phrase(dim: str, tag: str) -> str:
    try:
        return tx.get_tag(dim, tag).phrase
    except ValueError:
        return tag.replace("_", " ")


def _organ_phrase(organ: str) -> str:
    try:
        return tx.get_organ(organ).phrase
    except (KeyError, ValueError):
        return organ.replace("_", " ")


def format_measurement(mid: str, value: float) -> str:
    """``value`` at the measurement's reporting precision with its unit (``"55 %"``, ``"12.3 mm"``)."""
    d = tx.MEASUREMENTS[mid].decimals if mid in tx.MEASUREMENTS else 1
    unit = tx.MEASUREMENTS[mid].unit if mid in tx.MEASUREMENTS else ""
    v = tx.round_measurement(mid, float(value))
    num = f"{v:.{d}f}"
    return f"{num} {unit}".strip()


def _measure_phrase(mid: str) -> str:
    return tx.MEASUREMENTS[mid].phrase if mid in tx.MEASUREMENTS else mid.replace("_", " ")


def _echo_findings(row: pd.Series) -> list[dict[str, Any]] | None:
    """Echo findings of the row's structured study, or None when the row has none."""
    st = row.get("structured")
    if not isinstance(st, dict):
        return None
    found = [f for f in st.get("findings") or [] if f.get("dimension") == "echo"]
    return found or None


def _absent_tags(row: pd.Series, dim: str) -> set[str]:
    st = row.get("structured")
    if not isinstance(st, dict):
        return set()
    found = st.get("findings") or []
    return {f["tag"] for f in found if f.get("dimension") == dim and f.get("status") == "absent"}


# ------------------------------------------------------------------ per-task builders
def report_answer(row: pd.Series) -> str | None:
    """The formatted report of one manifest row (None when it has none)."""
    rep = row.get("report")
    return format_report(rep) if _present(rep) else None


def _report_records(row: pd.Series, rng: np.random.Generator, n: int = 1) -> list[dict[str, Any]]:
    """``n`` report records of one image, each asked with a different template."""
    ans = report_answer(row)
    if not ans:
        return []
    picks = rng.choice(len(REPORT_QUESTIONS), size=min(n, len(REPORT_QUESTIONS)), replace=False)
    return [
        _conv(f"{row['id']}-report" + (f"-{k}" if k else ""), [row["image"]], [(REPORT_QUESTIONS[j], ans)],
              _meta(row, "report"))
        for k, j in enumerate(int(p) for p in picks)
    ]  # fmt: skip


def diagnosis_answer(row: pd.Series) -> str | None:
    """The diagnosis answer of a row: echo findings (graded) for echo rows, else the T1 diagnosis."""
    echo = _echo_findings(row)
    if echo is not None:
        parts = []
        for f in echo:
            if f.get("status") != "present":
                continue
            name = tx.ECHO_FINDINGS[f["tag"]].phrase if f["tag"] in tx.ECHO_FINDINGS else f["tag"]
            parts.append(f"{f['grade']} {name}" if f.get("grade") else name)
        return _sentence("; ".join(parts)) if parts else "No echocardiographic abnormality."
    diag = row.get("diagnosis")
    if not _present(diag):
        return None
    phrase = _tag_phrase("diagnosis", str(diag))
    if diag == "normal":
        return "Normal appearance, no focal lesion."
    text = phrase
    if _present(row.get("organ")):
        text += f" in the {_organ_phrase(str(row['organ']))}"
    mal = row.get("malignant")
    if isinstance(mal, bool | np.bool_):
        text += ", suspicious for malignancy" if mal else ", likely benign"
    return _sentence(text)


def _diagnosis_records(row: pd.Series, rng: np.random.Generator) -> list[dict[str, Any]]:
    ans = diagnosis_answer(row)
    if ans is None:
        return []
    qs = ECHO_DIAGNOSIS_QUESTIONS if _echo_findings(row) is not None else DIAGNOSIS_QUESTIONS
    return [_conv(f"{row['id']}-diagnosis", [row["image"]], [(_pick(rng, qs), ans)], _meta(row, "diagnosis"))]


def _known_dims(row: pd.Series) -> dict[str, tuple[set[str], set[str]]]:
    """dim -> (present tags, tags known to be absent) for the VQA dimensions with any knowledge."""
    attrs = _mapping(row.get("attributes"))
    out = {}
    for dim in VQA_DIMENSIONS:
        present = set(attrs.get(dim) or [])
        absent = _absent_tags(row, dim) - present
        if present:  # the row lists this dimension's tags: every other tag is absent
            absent |= {t.id for t in tx.tags(dim)} - present
        if present or absent:
            out[dim] = (present, absent)
    return out


def _yesno_templates(dim: str, tag: str) -> tuple[str, ...]:
    adjective = dim in _ADJ_DIMS or (dim, tag) in _ADJ_TAGS
    return ADJ_TAG_QUESTIONS if adjective else NOUN_TAG_QUESTIONS


def _closed_questions(row: pd.Series, rng: np.random.Generator) -> list[tuple[str, str, dict[str, Any]]]:
    """All closed questions answerable from the row: (question, answer, meta)."""
    qs: list[tuple[str, str, dict[str, Any]]] = []
    for dim, (present, absent) in sorted(_known_dims(row).items()):
        for tag in sorted(present | absent):
            q = _pick(rng, _yesno_templates(dim, tag)).format(phrase=_tag_phrase(dim, tag))
            ans = "Yes" if tag in present else "No"
            qs.append((q, ans, {"kind": "attribute", "dimension": dim, "tag": tag}))
        if present and absent:  # multiple choice: one true value among values the row does not have
            truth = _pick(rng, sorted(present))
            n_wrong = min(3, len(absent))
            wrong = list(rng.choice(sorted(absent), size=n_wrong, replace=False))
            options = [truth, *wrong]
            rng.shuffle(options)
            opts = ", ".join(_tag_phrase(dim, t) for t in options)
            q = _pick(rng, MC_DIM_QUESTIONS).format(noun=DIMENSION_NOUNS[dim], options=opts)
            qs.append((q, _tag_phrase(dim, truth), {"kind": "attribute_mc", "dimension": dim, "tag": truth}))
    for mid, value in sorted(_mapping(row.get("measurements")).items()):
        if not isinstance(value, int | float) or value != value:
            continue
        v = tx.round_measurement(mid, float(value)) if mid in tx.MEASUREMENTS else float(value)
        d = tx.MEASUREMENTS[mid].decimals if mid in tx.MEASUREMENTS else 1
        step = 10.0 ** (-d)
        # a threshold clearly away from the value (>= 5 % and >= 2 reporting steps)
        delta = max(abs(v) * float(rng.uniform(0.05, 0.4)), 2 * step)
        up = v - delta < 0 or rng.random() < 0.5  # no negative thresholds
        thr = round(v + delta if up else v - delta, d)
        if mid in tx.MEASUREMENTS:
            thr = tx.round_measurement(mid, thr)
        if thr == v:
            continue
        above = rng.random() < 0.5
        cmp = "above" if above else "below"
        truth = (v > thr) if above else (v < thr)
        q = _pick(rng, THRESHOLD_QUESTIONS).format(
            phrase=_measure_phrase(mid), cmp=cmp, value=format_measurement(mid, thr)
        )
        qs.append(
            (
                q,
                "Yes" if truth else "No",
                {"kind": "threshold", "measurement": mid, "threshold": thr, "above": above},
            )
        )
    view = row.get("view")
    if _present(view) and view in tx.VIEWS:
        others = [v for v in tx.VIEWS if v != view]
        for vid, ans in ((view, "Yes"), (_pick(rng, others), "No")):
            q = _pick(rng, VIEW_YESNO_QUESTIONS).format(phrase=tx.VIEWS[vid].phrase)
            qs.append((q, ans, {"kind": "view", "view": vid}))
        options = [view, *rng.choice(others, size=min(3, len(others)), replace=False)]
        rng.shuffle(options)
        q = _pick(rng, VIEW_MC_QUESTIONS).format(options=", ".join(tx.VIEWS[v].phrase for v in options))
        qs.append((q, tx.VIEWS[view].phrase, {"kind": "view_mc", "view": view}))
    organ = row.get("organ")
    if _present(organ) and organ in tx.ORGAN_IDS:
        other = _pick(rng, [o for o in tx.ORGAN_IDS if o != organ])
        for oid, ans in ((organ, "Yes"), (other, "No")):
            q = _pick(rng, ORGAN_YESNO_QUESTIONS).format(phrase=_organ_phrase(oid))
            qs.append((q, ans, {"kind": "organ", "organ": oid}))
    return qs


def _open_questions(row: pd.Series, rng: np.random.Generator) -> list[tuple[str, str, dict[str, Any]]]:
    qs: list[tuple[str, str, dict[str, Any]]] = []
    attrs = _mapping(row.get("attributes"))
    for dim in VQA_DIMENSIONS:
        present = sorted(attrs.get(dim) or [])
        if present:
            q = _pick(rng, OPEN_DIM_QUESTIONS).format(noun=DIMENSION_NOUNS[dim])
            ans = " and ".join(_tag_phrase(dim, t) for t in present)
            qs.append((q, ans, {"kind": "attribute", "dimension": dim, "tags": present}))
    for mid, value in sorted(_mapping(row.get("measurements")).items()):
        if isinstance(value, int | float) and value == value:
            q = _pick(rng, OPEN_MEASURE_QUESTIONS).format(phrase=_measure_phrase(mid))
            qs.append((q, format_measurement(mid, value), {"kind": "measurement", "measurement": mid}))
    view = row.get("view")
    if _present(view) and view in tx.VIEWS:
        qs.append((_pick(rng, VIEW_OPEN_QUESTIONS), tx.VIEWS[view].phrase, {"kind": "view", "view": view}))
    organ = row.get("organ")
    if _present(organ):
        meta = {"kind": "organ", "organ": organ}
        qs.append((_pick(rng, ORGAN_OPEN_QUESTIONS), _organ_phrase(str(organ)), meta))
    return qs


def _vqa_records(row: pd.Series, rng: np.random.Generator, kind: str, per_image: int) -> list[dict[str, Any]]:
    qs = _closed_questions(row, rng) if kind == "vqa_closed" else _open_questions(row, rng)
    if not qs:
        return []
    picks = rng.choice(len(qs), size=min(per_image, len(qs)), replace=False)
    out = []
    for k, j in enumerate(sorted(int(p) for p in picks)):
        q, a, meta = qs[j]
        out.append(_conv(f"{row['id']}-{kind}-{k}", [row["image"]], [(q, a)], _meta(row, kind, **meta)))
    return out


def study_report(rows: pd.DataFrame, rng: np.random.Generator) -> str | None:
    """One report for all images of a study: the shared structured study, view/frame removed,
    measurements merged (first image wins), written by `sonofm.reports.write_report`."""
    structured = [s for s in rows.get("structured", pd.Series(dtype=object)) if isinstance(s, dict)]
    if not structured:
        first = rows.iloc[0]
        return report_answer(first)
    study = Study.from_dict(structured[0])
    study.view = None
    study.frame = None
    merged: dict[str, float] = {}
    for s in structured:
        for k, v in (s.get("measurements") or {}).items():
            merged.setdefault(k, float(v))
    study.measurements = merged
    return format_report(write_report(study, rng))


def _multi_records(df: pd.DataFrame, rng: np.random.Generator, max_images: int) -> list[dict[str, Any]]:
    out = []
    if "study_id" not in df.columns:
        return out
    for sid, group in df.groupby("study_id", sort=True):
        if not _present(sid) or len(group) < 2:
            continue
        group = group.sort_values("id")
        if len(group) > max_images:
            idx = np.sort(rng.choice(len(group), size=max_images, replace=False))
            group = group.iloc[idx]
        ans = study_report(group, rng)
        if not ans:
            continue
        n = len(group)
        q = _pick(rng, MULTI_QUESTIONS).format(n=n)
        meta = _meta(group.iloc[0], "multi_image", single_image=False, source_id=list(group["id"]))
        out.append(_conv(f"{sid}-multi", list(group["image"]), [(q, ans)], meta))
    return out


# ------------------------------------------------------------------ public API
def conversations_from_rows(
    df: pd.DataFrame,
    *,
    seed: int = 0,
    tasks: Iterable[str] = TASKS,
    questions_per_image: int = 2,
    max_images: int = 4,
    report_questions: int = 1,
) -> list[dict[str, Any]]:
    """Conversation records from manifest rows (see the module docstring).

    ``questions_per_image``: closed / open VQA questions per image and family; ``report_questions``:
    report records per image, each with another question template (more teaches the model that
    the wording does not change the report); ``max_images``: images per multi-image study."""
    tasks = tuple(tasks)
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise UserError(f"unknown conversation task(s) {bad}; expected some of {list(TASKS)}")
    if questions_per_image < 1 or max_images < 2 or report_questions < 1:
        raise UserError("questions_per_image and report_questions must be >= 1, max_images >= 2")
    rng = np.random.default_rng(seed)
    df = df.sort_values("id").reset_index(drop=True)
    records: list[dict[str, Any]] = []
    for _, row in df.iterrows():
        if not _present(row.get("image")):
            continue
        if "report" in tasks:
            records += _report_records(row, rng, report_questions)
        if "diagnosis" in tasks:
            records += _diagnosis_records(row, rng)
        for kind in ("vqa_closed", "vqa_open"):
            if kind in tasks:
                records += _vqa_records(row, rng, kind, questions_per_image)
    if "multi_image" in tasks:
        records += _multi_records(df, rng, max_images)
    return records


def conversations_from_dataset(
    data_dir: str | Path, split: str | None = "train", **options: Any
) -> list[dict[str, Any]]:
    """ShareGPT records for one split (None: all rows) of a dataset directory or manifest file.

    ``options``: those of `conversations_from_rows` (seed, tasks, questions_per_image, max_images,
    report_questions). Image paths stay relative to the dataset directory (the manifest's own paths).
    """
    from sonofm.data.dataset import load_table  # lazy: imports torch; `import sonofm.vlm` stays torch-free

    df = load_table(data_dir, split)
    recs = conversations_from_rows(df, **options)
    log.info("%s [%s]: %d conversations from %d images", data_dir, split, len(recs), len(df))
    return recs


def _normalise_record(sample: Any, where: str) -> dict[str, Any]:
    """One ShareGPT/LLaVA sample in the canonical form (or DataError naming ``where``)."""
    if not isinstance(sample, dict):
        raise DataError(f"{where}: not a JSON object")
    imgs = sample.get("image", sample.get("images")) or []
    imgs = [imgs] if isinstance(imgs, str) else [str(p) for p in imgs]
    raw = sample.get("conversations") or sample.get("messages")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where}: no 'conversations' (or 'messages') list")
    turns = []
    for j, t in enumerate(raw):
        if not isinstance(t, dict):
            raise DataError(f"{where}: turn {j} is not an object")
        who = str(t.get("from") or t.get("role") or "").lower()
        text = t.get("value", t.get("content"))
        if who in ("human", "user"):
            who = "human"
        elif who in ("gpt", "assistant"):
            who = "gpt"
        elif who == "system":
            continue
        else:
            raise DataError(f"{where}: turn {j} has role {who!r}; expected human/user or gpt/assistant")
        if not isinstance(text, str):
            raise DataError(f"{where}: turn {j} has no text 'value'")
        turns.append({"from": who, "value": text})
    if turns and turns[0]["from"] != "human":
        raise DataError(f"{where}: the first turn must be the user's")
    n_ph = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
    if n_ph > len(imgs):
        raise DataError(f"{where}: {n_ph} {IMAGE_TOKEN} placeholders but {len(imgs)} images")
    if n_ph < len(imgs):  # LLaVA convention: missing placeholders go in front of the first question
        turns[0] = {"from": "human", "value": f"{IMAGE_TOKEN}\n" * (len(imgs) - n_ph) + turns[0]["value"]}
    out = {"id": str(sample.get("id", where)), "image": imgs, "conversations": turns}
    if isinstance(sample.get("meta"), dict):
        out["meta"] = sample["meta"]
    return out


def read_sharegpt(path: str | Path) -> list[dict[str, Any]]:
    """Read EchoVLM/LLaVA ShareGPT JSON (array or JSONL; ``messages``/``role`` form accepted).

    Records come back canonical: ``image`` a list, roles ``human``/``gpt``, system turns dropped
    and ``<image>`` placeholders completed so their count equals the image count.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ShareGPT JSON file not found")
    return [_normalise_record(s, f"{path.name}[{i}]") for i, s in enumerate(read_json_records(path))]


def write_sharegpt(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write records as a JSON array (``.jsonl``: one record per line), atomically."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        text = json.dumps(list(records), ensure_ascii=False, indent=1)
    return atomic_write_text(path, text)
