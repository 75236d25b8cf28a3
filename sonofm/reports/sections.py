"""Report segmentation for the parser: section heads and sentence spans.

Which parts of a report are findings, which the impression and which are skipped (indication,
history, technique); and sentence spans with run-ons cut so that per-sentence work stays linear.
"""

from __future__ import annotations

import re

# Per-sentence work (ConText scopes, quantity assignment) is quadratic in the sentence length, so
# a run-on "sentence" is cut into pieces of at most this many characters: total time stays linear.
MAX_SENTENCE_CHARS = 1_000


_SECTION_RE = re.compile(
    r"(?im)^\s*(findings?|impressions?|conclusions?|summary|comments?|indications?|history|"
    r"clinical (?:history|information|details)|technique|opinion|diagnosis)\s*:"
    r"|\b(findings?|impressions?|conclusions?|indications?)\s*:"
)


_IMPRESSION_HEADS = {
    "impression",
    "impressions",
    "conclusion",
    "conclusions",
    "summary",
    "opinion",
    "diagnosis",
}


_SKIP_HEADS = {
    "indication",
    "indications",
    "history",
    "clinical history",
    "clinical information",
    "clinical details",
    "technique",
}


def _sections(text: str) -> list[tuple[str, int, int]]:
    """(section kind "findings"|"impression"|"skip", start, end) char spans."""
    heads = [(m.start(), m.end(), (m.group(1) or m.group(2)).lower()) for m in _SECTION_RE.finditer(text)]
    if not heads:
        return [("findings", 0, len(text))]
    out: list[tuple[str, int, int]] = []
    if heads[0][0] > 0:
        out.append(("findings", 0, heads[0][0]))
    for k, (_s, e, name) in enumerate(heads):
        nxt = heads[k + 1][0] if k + 1 < len(heads) else len(text)
        kind = "impression" if name in _IMPRESSION_HEADS else "skip" if name in _SKIP_HEADS else "findings"
        out.append((kind, e, nxt))
    return out


def _bounded(spans: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
    """Sentence spans with run-ons cut at `MAX_SENTENCE_CHARS` (at a ';' or ',' or space if any)."""
    out: list[tuple[int, int]] = []
    for a, b in spans:
        while b - a > MAX_SENTENCE_CHARS:
            lim = a + MAX_SENTENCE_CHARS
            cut = max(text.rfind(";", a, lim), text.rfind(",", a, lim))
            if cut <= a:
                cut = text.rfind(" ", a, lim)
            cut = cut if cut > a else lim
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return out
