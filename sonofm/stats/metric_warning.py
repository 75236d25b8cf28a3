"""`MetricWarning`: a metric is undefined on its input (and returns NaN) -- one warning class for
every metric module (classification, regression, retrieval, bootstrap)."""

from __future__ import annotations

import warnings


class MetricWarning(UserWarning):
    """A metric is undefined on this input (e.g. AUC with a single class) and was set to NaN."""


def warn_metric(msg: str) -> None:
    """Warn with a `MetricWarning`, pointing at the code that called the metric."""
    warnings.warn(msg, MetricWarning, stacklevel=3)
