"""`sonofm diagnose`: floor / model / caption oracle, and per-tag image-side bounds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from sonofm.eval.diagnose import diagnose, summary_rows
from sonofm.eval.tasks.attribute_bounds import attribute_bounds


@dataclass
class _Emb:
    image: np.ndarray


class _Ctx:
    """The slice of EvalContext that attribute_bounds reads."""

    def __init__(self, frames: dict[str, pd.DataFrame], image: dict[str, np.ndarray]) -> None:
        self.frames, self.embeddings, self.model = frames, {s: _Emb(x) for s, x in image.items()}, None

    def has_split(self, split: str) -> bool:
        return split in self.frames

    def rows(self, split: str) -> pd.DataFrame:
        return self.frames[split]


def _split(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    anechoic = rng.random(n) < 0.5
    attrs = [{"echogenicity": ["anechoic" if a else "hypoechoic"], "shape": ["oval"]} for a in anechoic]
    x = rng.normal(size=(n, 8))
    x[:, 0] += np.where(anechoic, 3.0, -3.0)  # echogenicity is visible along one direction
    return pd.DataFrame({"attributes": attrs}), x


def test_linear_probe_bound_separates_a_visible_tag_and_not_an_invisible_one() -> None:
    rng = np.random.default_rng(0)
    (tr, xtr), (te, xte) = _split(200, rng), _split(100, rng)
    bounds = attribute_bounds(_Ctx({"train": tr, "test": te}, {"train": xtr, "test": xte}))
    assert bounds["echogenicity/anechoic"]["linear_probe_auc"] > 0.97
    # shuffle the test images against their labels: the same probe must fall to chance
    bounds = attribute_bounds(
        _Ctx({"train": tr, "test": te}, {"train": xtr, "test": xte[rng.permutation(100)]})
    )
    assert abs(bounds["echogenicity/anechoic"]["linear_probe_auc"] - 0.5) < 0.15
    assert "shape/oval" not in bounds  # every lesion is oval: no negatives, no AUC


def test_summary_rows_put_each_column_beside_the_others() -> None:
    cols = {
        "floor (untrained)": {"zeroshot/region/acc1": 0.1, "zeroshot/attributes/auc/shape/oval": 0.5},
        "model": {"zeroshot/region/acc1": 0.6, "zeroshot/attributes/auc/shape/oval": 0.7},
        "caption oracle": {"zeroshot/region/acc1": 0.9, "zeroshot/attributes/auc/shape/oval": 0.9},
    }
    rows = {r["metric"]: r for r in summary_rows(cols)}
    assert rows["region acc1"] == {
        "metric": "region acc1",
        "floor (untrained)": 0.1,
        "model": 0.6,
        "caption oracle": 0.9,
    }
    assert rows["attribute AUC (mean over tags)"]["model"] == pytest.approx(0.7)


def test_diagnose_end_to_end_on_a_tiny_model(sim_data, model_a) -> None:
    result = diagnose(model_a, sim_data)
    assert list(result["scores"]) == ["floor (untrained)", "model", "caption oracle"]
    region = next(r for r in result["rows"] if r["metric"] == "region acc1")
    assert all(0.0 <= region[c] <= 1.0 for c in result["scores"])
    assert result["n_test"] == int((pd.read_parquet(sim_data / "manifest.parquet")["split"] == "test").sum())
