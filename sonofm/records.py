"""The JSON-able summary of a result object: its named attributes, in a fixed order.

Several small result classes (an ingest's counts, a report score, a serving batcher's statistics,
a retrieved case) write `to_dict` as "these attributes, in this order, plus a few derived
values"; `pick` is that, once.
"""

from __future__ import annotations

from typing import Any


def pick(obj: object, *names: str, **derived: Any) -> dict[str, Any]:
    """``{name: obj.name}`` for ``names`` in order (properties included), then ``derived``."""
    return {name: getattr(obj, name) for name in names} | derived
