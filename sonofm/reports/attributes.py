"""Study -> the 9-dimension attribute dict that manifests, the semantic loss and the graph use."""

from __future__ import annotations

from sonofm import taxonomy as tx
from sonofm.reports.schema import Status, Study


def study_attributes(study: Study) -> dict[str, list[str]]:
    """The PRESENT tag ids per dimension of `tx.DIMENSIONS` (body_system and organ from `study.organ`).

    Absent and uncertain findings and echo findings are not attributes; order follows the findings,
    without duplicates.
    """
    out: dict[str, list[str]] = {d: [] for d in tx.DIMENSIONS}
    if study.organ:
        try:
            out["organ"] = [study.organ]
            out["body_system"] = [tx.system_of(study.organ)]
        except ValueError:
            out["organ"] = []
    for f in study.findings:
        descriptor = f.dimension in out and f.dimension not in ("organ", "body_system")
        keep = descriptor and f.status is Status.PRESENT
        if keep and f.tag not in out[f.dimension]:
            out[f.dimension].append(f.tag)
    return out
