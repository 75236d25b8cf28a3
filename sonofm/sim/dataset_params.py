"""The parameters of a simulated dataset, and what they fix per patient.

Argument normalisation for `simulate_dataset` (realism knobs, split fractions, regions, plugin
modules), the canonical CLI call recorded in the card, and the pure functions of (seed, index)
that give a patient its id, region and first split: so a patient's content depends only on them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sonofm.errors import UserError
from sonofm.sim.registry import registered_regions
from sonofm.sim.splits import coverage_note, patients_from_rows, stratified_splits

log = logging.getLogger("sonofm.sim.generator")  # the generator's logger, as before the split

TOOL = "sonofm simulate"


FORMAT_VERSION = 1


# Opt-in realism knobs (all off by default), name -> what turning it on does.
REALISM_KNOBS: dict[str, str] = {
    "burned_in_text": "burn fake scanner text (labels, patient ID, date) into the pixels",
    "doppler_box": "add a colour-Doppler box over the lesion or LV (RGB images)",
    "domain_randomization": "redraw scanner and lesion rendering nuisances per image, labels kept "
    "(sonofm.sim.domain_randomization)",
}
# Knobs added after datasets were made with the others: recorded only when on, so the parameters,
# card and manifest of a dataset made without them keep their exact bytes.
_RECORDED_WHEN_ON = frozenset({"domain_randomization"})


SPLIT_NAMES = ("train", "val", "test")


SPLIT_BLOCK = 20  # splits are exact within each block of 20 consecutive patients


def _normalise_realism(realism: Mapping[str, bool] | Iterable[str] | None) -> dict[str, bool]:
    if realism is None:
        on: set[str] = set()
    elif isinstance(realism, Mapping):
        on = {k for k, v in realism.items() if v}
        unknown = set(realism) - set(REALISM_KNOBS)
    else:
        on = set(realism)
        unknown = on - set(REALISM_KNOBS)
    if realism is not None and unknown:
        raise UserError(f"unknown realism knob(s) {sorted(unknown)}; valid: {', '.join(REALISM_KNOBS)}")
    return {k: k in on for k in REALISM_KNOBS if k in on or k not in _RECORDED_WHEN_ON}


def _normalise_splits(splits: Sequence[float]) -> tuple[float, float, float]:
    shown = splits if isinstance(splits, str) else ",".join(str(s) for s in splits)
    try:
        vals = tuple(float(s) for s in splits)
    except (TypeError, ValueError):
        raise UserError(f"--splits must be three numbers train,val,test, got {shown!r}") from None
    if len(vals) != 3 or any(not np.isfinite(v) or v < 0 for v in vals):
        raise UserError(f"--splits must be three non-negative numbers train,val,test, got {shown!r}")
    if abs(sum(vals) - 1.0) > 1e-6:
        raise UserError(f"--splits must sum to 1, got {','.join(f'{v:g}' for v in vals)} (sum {sum(vals):g})")
    return vals  # type: ignore[return-value]


def _import_plugins(plugins: Sequence[str]) -> None:
    for mod in plugins:
        try:
            importlib.import_module(mod)
        except ImportError as err:
            raise UserError(f"cannot import simulator plugin module {mod!r}: {err}") from None


def _resolve_regions(regions: Sequence[str] | str | None) -> tuple[str, ...]:
    valid = registered_regions()
    if regions is None:
        if not valid:
            raise UserError("no region simulators are registered")
        return valid
    if isinstance(regions, str):
        regions = [r for r in regions.split(",")]
    wanted = [r.strip() for r in regions if r.strip()]
    if not wanted:
        raise UserError(f"--regions is empty; valid regions: {', '.join(valid)}")
    unknown = [r for r in wanted if r not in valid]
    if unknown:
        bad = ", ".join(map(repr, unknown))
        raise UserError(f"unknown region(s) {bad}; valid regions: {', '.join(valid)}")
    return tuple(dict.fromkeys(wanted))  # de-duplicated, in the order given


def canonical_command(params: Mapping[str, Any]) -> str:
    """The CLI call that reproduces a dataset (output dir and worker count do not change content)."""
    sp = ",".join(f"{v:g}" for v in params["splits"])
    cmd = (
        f"sonofm simulate --out DATASET_DIR --n {params['n']} --regions {','.join(params['regions'])} "
        f"--size {params['size']} --seed {params['seed']} --splits {sp}"
    )
    for knob, on in params["realism"].items():
        if on:
            cmd += " --" + knob.replace("_", "-")
    if params.get("clean_looks"):
        cmd += f" --clean-looks {params['clean_looks']}"
    return cmd


def patient_split(seed: int, index: int, fractions: Sequence[float], block: int = SPLIT_BLOCK) -> str:
    """The split of patient `index`: exact proportions within each block of `block` patients.

    Per-block largest-remainder counts shuffled by a stream of (seed, block) keep small datasets
    close to the requested fractions (a per-patient coin flip would not) while still depending
    only on (seed, index, fractions).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    raw = fr * block
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: block - counts.sum()]:
        counts[k] += 1
    b, pos = divmod(index, block)
    labels = np.repeat(np.arange(len(fr)), counts)
    order = np.random.default_rng([seed, 1, b, 0x53504C54]).permutation(block)
    return SPLIT_NAMES[int(labels[order[pos]])]


def _assign_splits(rows: list[dict[str, Any]], fractions: Sequence[float], seed: int) -> str:
    """Rewrite each row's split with `sonofm.sim.splits.stratified_splits` (in place).

    The per-patient draw in the records (`patient_split`) ignores content, which left regions
    out of val/test in small datasets; this assignment sees every patient's region and views.
    Returns a note on what could not be covered ("" when every stratum is in every split).
    """
    split_of, missing = stratified_splits(patients_from_rows(rows), fractions, seed)
    for r in rows:
        r["split"] = split_of[str(r["patient_id"])]
    note = coverage_note(missing)
    if note:
        log.warning("simulate: %s", note)
    return note


def patient_region(regions: Sequence[str], index: int) -> str:
    return regions[index % len(regions)]


def patient_id(seed: int, index: int) -> str:
    return f"sim-{seed}-p{index:06d}"
