"""Class labels of a manifest column, as eval kinds and the classify task read them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sonofm.errors import UserError
from sonofm.taxonomy import system_of


def label_values(rows: pd.DataFrame, target: str) -> np.ndarray:
    """Object array of class labels for `target` (None where unknown)."""
    if target == "body_system":
        return np.array([system_of(o) if isinstance(o, str) else None for o in rows["organ"]], dtype=object)
    if target == "malignant":
        return np.array(
            [None if m is None or m != m else ("malignant" if m else "benign") for m in rows["malignant"]],
            dtype=object,
        )
    if target not in rows.columns:
        raise UserError(f"task target {target!r} is not a manifest column (or body_system / malignant)")
    return np.array([v if isinstance(v, str) and v else None for v in rows[target]], dtype=object)
