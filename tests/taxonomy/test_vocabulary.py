"""The whole vocabulary a report parser indexes stays unambiguous across its tables."""

from __future__ import annotations

from collections import defaultdict

from sonofm import taxonomy as T


def test_no_phrase_means_two_things_across_tables():
    owners: dict[str, set[str]] = defaultdict(set)
    for t in T.all_tags():
        for s in t.synonyms:
            owners[s].add(f"tag:{t.dimension}")
    for o in T.ORGANS:
        for s in o.locations:
            owners[s].add(f"location:{o.id}")
    for fid, f in T.ECHO_FINDINGS.items():
        for s in f.synonyms:
            owners[s].add(f"echo:{fid}")
    for mid, m in T.MEASUREMENTS.items():
        for s in m.synonyms:
            owners[s].add(f"measurement:{mid}")
    for vid, v in T.VIEWS.items():
        for s in v.synonyms:
            owners[s].add(f"view:{vid}")
    for fr, phrases in T.FRAME_PHRASES.items():
        for s in phrases:
            owners[s].add(f"frame:{fr}")
    shared = {s: o for s, o in owners.items() if len(o) > 1}
    assert shared == {s: {f"tag:{d}" for d in dims} for s, dims in T.CROSS_DIMENSION_OVERLAPS.items()}


def test_locations_are_lowercase_and_normalised():
    for o in T.ORGANS:
        for s in o.locations:
            assert s == T.normalize_phrase(s), (o.id, s)
