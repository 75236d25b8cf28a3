"""The numbers of the demo's report.html and their plain-language reading.

`headline_rows` turns both models' results into the headline table's rows (values, CIs, patient
counts, the paired test); `reading` writes from them who wins where, by how much, whether the
paired bootstrap calls it significant, and the caveats. Used by `sonofm.demo_report`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sonofm.stats.health import chance_relation
from sonofm.stats.metrics import MIN_PATIENTS
from sonofm.stats.reading import patients_phrase

ALPHA = 0.05


def _value(m: Any) -> float | None:
    v = m.get("value") if isinstance(m, dict) else m
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def expand_headline(headline: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Every zero-shot accuracy row gets its macro-AUC row beside it.

    Why: accuracy alone hides the only signal of a model whose argmax collapsed onto one class
    (region accuracy 0.000 with a region macro AUC of 0.77), and hides anti-correlation (AUC < 0.5).
    """
    out: list[tuple[str, str, str]] = []
    for task, metric, label in headline:
        out.append((task, metric, label))
        if task.startswith("zeroshot/") and metric == "acc1":
            auc_label = label[: -len(" acc")] if label.endswith(" acc") else label
            out.append((task, "macro_auc", f"{auc_label} macro AUC"))
    return out


def headline_rows(results: dict[str, Any], headline: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Per headline metric: both models' values, CIs and patient counts, delta (B - A), the paired
    bootstrap p-value (raw and Holm-corrected, or why there is no test), the chance level, direction,
    and for metric families the per-member significance (raw and Holm-corrected counts)."""
    models = results["models"]
    if not models:
        return []
    pair = next(iter(results.get("compare", {}).values()), {})
    rows = []
    for task, metric, label in expand_headline(headline):
        row: dict[str, Any] = {
            "label": label,
            "task": task,
            "metric": metric,
            "values": [],
            "cis": [],
            "n_patients": [],
        }
        for m in models:
            metrics = m["tasks"].get(task, {}).get("metrics", {})
            if metric.endswith("/"):
                vals = [
                    v for k, x in metrics.items() if k.startswith(metric) and (v := _value(x)) is not None
                ]
                row["values"].append(float(np.mean(vals)) if vals else None)
                row["cis"].append(None)
                row["n_patients"].append(None)
                row["family_size"] = len(vals)
            else:
                x = metrics.get(metric) or {}
                row["values"].append(_value(x) if x else None)
                lo, hi = _value(x.get("ci_low")), _value(x.get("ci_high"))
                row["cis"].append((lo, hi) if lo is not None and hi is not None else None)
                row["n_patients"].append(x.get("n_patients"))
        if all(v is None for v in row["values"]):
            continue
        cmp_task = pair.get(task, {})
        if metric.endswith("/"):
            # a family mean has no per-sample form; its members (mean_auc/<dim> -> auc/<dim>/<tag>) do
            prefix = "auc/" if metric == "mean_auc/" else metric
            members = [
                r for k, r in cmp_task.items() if k.startswith(prefix) and r.get("p_value") is not None
            ]

            def sig(r: dict[str, Any], key: str) -> bool:
                return r.get(key) is not None and r[key] < ALPHA

            row["higher_is_better"] = True
            row["p_value"] = None
            row["family_sig"] = {
                "b_better": sum(1 for r in members if sig(r, "p_value") and r["delta"] < 0),
                "a_better": sum(1 for r in members if sig(r, "p_value") and r["delta"] > 0),
                "b_better_holm": sum(1 for r in members if sig(r, "p_holm") and r["delta"] < 0),
                "a_better_holm": sum(1 for r in members if sig(r, "p_holm") and r["delta"] > 0),
                "n": len(members),
            }
        else:
            c = cmp_task.get(metric, {})
            row["higher_is_better"] = bool(
                c.get("higher_is_better", not metric.endswith(("mae", "rank", "ece")))
            )
            row["p_value"] = c.get("p_value")
            row["p_holm"] = c.get("p_holm")
            row["untestable"] = c.get("untestable")
        a, b = (row["values"] + [None, None])[:2]
        row["delta"] = None if a is None or b is None else b - a
        row["chance"] = _chance(models[0]["tasks"].get(task, {}), metric)
        rows.append(row)
    return rows


def _chance(task: dict[str, Any], metric: str) -> float | None:
    """What random guessing scores: 0.5 AUC, 1/classes accuracy, ~K/gallery retrieval R@K."""
    info = task.get("info", {}) or {}
    if "auc" in metric:
        return 0.5
    if metric == "acc1" and isinstance(info.get("classes"), list) and info["classes"]:
        return 1.0 / len(info["classes"])
    k = metric.rpartition("R@")[2]
    if "R@" in metric and k.isdigit() and info.get("n_texts") and info.get("n_images"):
        gallery = float(info["n_texts" if metric.startswith("image_to_text") else "n_images"])
        return min(1.0, int(k) / gallery)  # one positive per query; more positives raise it
    return None


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pfmt(p: float | None) -> str:
    return "n/a" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _chance_sentence(r: dict[str, Any], names: tuple[str, str]) -> str:
    """Where each model stands against chance, decided by its CI (or a tolerance without one)."""
    chance = r.get("chance")
    if chance is None or not r["higher_is_better"]:
        return ""
    cis = (r.get("cis", []) + [None, None])[:2]
    rels = [
        chance_relation(v, *(ci if ci else (None, None)), chance)
        for v, ci in zip((r["values"] + [None, None])[:2], cis, strict=True)
    ]
    words = {"below": "below chance", "at": "indistinguishable from chance", "above": "above chance"}
    below = (
        "anti-correlated with the truth (worse than guessing)"
        if "auc" in r["metric"]
        else "worse than guessing"
    )
    c = f"chance is {_fmt(chance)}"
    if rels[0] == rels[1] and rels[0] is not None:
        tail = f", i.e. {below}" if rels[0] == "below" else ""
        return f" Against chance ({c}): both are {words[rels[0]]}{tail}."
    parts = [
        f"{html.escape(n)} is {words[x]}" + (f" ({below})" if x == "below" else "")
        for n, x in zip(names, rels, strict=True)
        if x is not None
    ]
    return f" Against chance ({c}): " + ", ".join(parts) + "." if parts else ""


def _patients_text(r: dict[str, Any]) -> str:
    ks = {k for k in r.get("n_patients", []) if k is not None}
    return f"; {patients_phrase(min(ks))} in the test split" if ks else ""


def reading(
    rows: list[dict[str, Any]],
    names: tuple[str, str],
    *,
    n_test: int | None,
    n_test_patients: int | None = None,
    n_params: int | None,
    steps: dict[str, int],
    n_images: int | None,
    multiple_testing: dict[str, int] | None = None,
    alerts: dict[str, list[str]] | None = None,
    preset: str = "tiny",
    n_boot: int | None = None,
) -> tuple[list[str], list[str]]:
    """(findings, caveats): plain-language sentences generated from the headline rows.

    A difference is called significant only when its Holm-corrected p (over every metric the
    comparison tested) is below ALPHA and the test split has at least MIN_PATIENTS patients;
    `alerts` (per model: collapse, below-chance AUC, too few patients) become sentences too.
    """
    a_name, b_name = names
    findings: list[str] = []
    wins = {a_name: 0, b_name: 0}
    sig = {a_name: 0, b_name: 0}
    for r in rows:
        a, b = (r["values"] + [None, None])[:2]
        if a is None or b is None:
            findings.append(
                f"{html.escape(r['label'])}: only one model has this number ({_fmt(a)} vs {_fmt(b)})."
            )
            continue
        if _fmt(a) == _fmt(b):  # equal as printed: calling a winner would contradict the table
            findings.append(f"{html.escape(r['label'])}: a tie at {_fmt(a)}.{_chance_sentence(r, names)}")
            continue
        b_better = (b > a) == r["higher_is_better"]
        winner, loser = (b_name, a_name) if b_better else (a_name, b_name)
        wv, lv = (b, a) if b_better else (a, b)
        wins[winner] += 1
        rel = f"{abs(b - a) / abs(a) * 100:.0f}% relative" if abs(a) > 1e-9 else ""
        extra = "; ".join(x for x in (rel, _patients_text(r).removeprefix("; ")) if x)
        sentence = f"<b>{html.escape(r['label'])}</b>: {html.escape(winner)} {_fmt(wv)} vs {_fmt(lv)}"
        sentence += f" ({extra})" if extra else ""
        if r.get("family_sig") is not None:
            fs = r["family_sig"]
            sentence += f" (mean of {r.get('family_size', '?')} per-dimension AUCs)."
            if fs["n"]:
                sentence += (
                    f" Per-tag differences with p &lt; {ALPHA}: {fs['b_better']} favour "
                    f"{html.escape(b_name)} and {fs['a_better']} favour {html.escape(a_name)}, "
                    f"of {fs['n']}; after Holm correction "
                    f"{fs.get('b_better_holm', 0)} and {fs.get('a_better_holm', 0)}."
                )
            else:
                sentence += " No per-tag difference was tested (too few test patients)."
        elif r.get("untestable"):
            sentence += f": <span class='ns'>not tested</span> ({html.escape(r['untestable'])})."
        elif r.get("p_value") is not None:
            p, ph = r["p_value"], r.get("p_holm")
            if p < ALPHA and (ph is None or ph < ALPHA):
                sig[winner] += 1
                sentence += (
                    f": <span class='sig'>significant</span> (paired bootstrap over patients, p = {_pfmt(p)}"
                )
                sentence += f"; Holm-corrected p = {_pfmt(ph)})." if ph is not None else ")."
            elif p < ALPHA:
                sentence += (
                    f": <span class='ns'>not significant after correction</span> (p = {_pfmt(p)} alone, "
                    f"Holm-corrected p = {_pfmt(ph)} over all the metrics compared)."
                )
            else:
                sentence += (
                    f": <span class='ns'>not significant</span> (p = {_pfmt(p)}; "
                    f"{html.escape(loser)} could equally be ahead on another draw of test patients)."
                )
        else:
            sentence += "."
        findings.append(sentence + _chance_sentence(r, names))
    scored = wins[a_name] + wins[b_name]
    if scored:
        lead = b_name if wins[b_name] > wins[a_name] else a_name if wins[a_name] > wins[b_name] else None
        head = (
            f"Overall, <b>{html.escape(lead)}</b> is ahead on {wins[lead]} of {scored} headline metrics"
            if lead
            else f"The two models split the {scored} headline metrics evenly"
        )
        head += (
            f"; {sig[b_name] + sig[a_name]} of the single-number differences are significant "
            f"at p &lt; {ALPHA} after Holm correction ({sig[b_name]} for {html.escape(b_name)}, "
            f"{sig[a_name]} for {html.escape(a_name)})."
        )
        findings.insert(0, head)
    # one warning per text, naming every model it applies to
    who: dict[str, list[str]] = {}
    for model, items in (alerts or {}).items():
        for item in items:
            who.setdefault(item, []).append(model)
    for item, models in who.items():
        label = "both models" if len(models) == 2 and len(alerts or {}) == 2 else ", ".join(models)
        findings.append(f"<span class='warn'>Warning ({html.escape(label)})</span>: {html.escape(item)}")
    caveats = [
        "The data are <b>simulated</b> (sonofm's physics-based B-mode simulator with exact ground truth): "
        "numbers show the pipeline and the objectives working, not clinical performance.",
        f"The model is the <b>{html.escape(preset)}</b> preset ({n_params / 1e6:.1f} M parameters)"
        if n_params
        else f"The model is the <b>{html.escape(preset)}</b> preset",
    ]
    if steps:
        caveats[-1] += (
            ", trained for only "
            + " / ".join(f"{v} steps ({html.escape(k)})" for k, v in steps.items())
            + " on the CPU: both models are far from converged, and a longer run can change the ranking."
        )
    else:
        caveats[-1] += "; training was short, so both models are far from converged."
    if n_test:
        who = f" of <b>{patients_phrase(n_test_patients)}</b>" if n_test_patients is not None else ""
        caveats.append(
            f"The test split has only <b>{n_test} images</b>{who}"
            + (f" (of {n_images} simulated)" if n_images else "")
            + ": intervals and tests resample whole patients (a patient's images are near-duplicates), "
            "so the 95% intervals are wide and small differences are noise."
        )
    if n_test_patients is not None and n_test_patients < MIN_PATIENTS:
        caveats.append(
            f"With fewer than {MIN_PATIENTS} test patients no difference is tested or called significant."
        )
    mt = multiple_testing or {}
    if mt.get("tests"):
        caveats.append(
            f"{mt['tests']} metric differences were tested: {mt['raw']} have p &lt; {ALPHA} before "
            f"correction (about {mt['tests'] * ALPHA:.1f} would by chance alone if the models were equal); "
            f"{mt['holm']} remain after Holm's correction (family-wise error) and {mt['bh']} after "
            "Benjamini-Hochberg (false discovery rate). The reading calls a difference significant only "
            "after Holm's correction."
        )
        # a bootstrap p-value cannot fall below 1/(n_boot + 1); when Holm's smallest threshold is
        # lower than that, "none significant" says nothing about the models
        if n_boot and 1 / (n_boot + 1) > ALPHA / mt["tests"]:
            caveats.append(
                f"With {n_boot} bootstrap resamples no p-value can fall below {1 / (n_boot + 1):.4f}, "
                f"while Holm's correction over {mt['tests']} tests needs p &lt; {ALPHA / mt['tests']:.5f} "
                "for the strongest difference: in this run no difference can pass it, however large. "
                "Judge the differences by their patient-level intervals, or test the few that matter with "
                "more resamples and more training seeds (benchmarks/ablation.py: 1,000 resamples, 3 seeds)."
            )
    return findings, caveats
