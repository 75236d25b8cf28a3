"""Finding-like words the parser could not map, returned as ``unknown_terms`` for a human.

Words under a negation/uncertainty scope that match nothing ("no hydronephrosis"), and words that
look like findings (…echoic, …itis, abbreviations) outside every recognised span; with the
stop-word and benign-word lists that keep the hint list short.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sonofm.reports.text import Token, tokenize

if TYPE_CHECKING:  # phrases imports this module's stop words
    from sonofm.reports.phrases import _Match

_UNKNOWN_PATTERNS = (
    re.compile(r"(?i)\b[a-z]*echoic\b"),
    re.compile(r"(?i)\b[a-z]*echogenic(?:ity)?\b"),
    re.compile(r"(?i)\bcalcif[a-z]*\b"),
    re.compile(
        r"(?i)\b[a-z]{3,}(?:omas?|itis|osis|megaly|ectasia|lithiasis|cele|plasia|trophy|stenosis|pathy|emia|"
        r"uria|algia|rrhage|thrombus|thrombosis|fibroid)\b"
    ),
    re.compile(r"(?i)\b[a-z]+vascular(?:ity)?\b"),
    re.compile(r"\b[A-Z][A-Z0-9']{1,7}[a-z]?\b"),
)


# words that look like abbreviations/findings but carry no finding (section heads, units, lexicons)
_BENIGN_WORDS = frozenset(
    {
        "findings",
        "impression",
        "conclusion",
        "us",
        "ultrasound",
        "cm",
        "mm",
        "ml",
        "acr",
        "ti",
        "rads",
        "bi",
        "o",
        "tr",
        "tr1",
        "tr2",
        "tr3",
        "tr4",
        "tr5",
        "ii",
        "iii",
        "iv",
        "nb",
        "pt",
        "hx",
        "mhz",
        "doppler",
        "colour",
        "color",
        "no",
        "na",
        "n/a",
        "ok",
        "rt",
        "lt",
        "lhs",
        "rhs",
        "ap",
        "trans",
        "sag",
        "long",
        "img",
        "b",
        "d",
        "cdi",
        "i",
        "a",
        "x",
        "by",
        "mode",
        "echo",
        "echoes",
        "echogenic",
    }
)


_STOP = frozenset(
    {
        "the",
        "a",
        "an",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "and",
        "or",
        "any",
        "evidence",
        "sign",
        "definite",
        "significant",
        "focal",
        "further",
        "other",
        "obvious",
        "seen",
        "noted",
        "identified",
        "there",
        "is",
        "are",
        "wa",
        "were",
        "be",
        "been",
        "thi",
        "that",
        "it",
        "its",
        "this",
        "these",
        "those",
        "new",
        "change",
        "interval",
        "visible",
        "demonstrable",
        "detectable",
        "sonographic",
        "ultrasound",
        "also",
        "again",
        "now",
        "today",
        "right",
        "left",
        "bilateral",
        "both",
        "either",
        "side",
        "measuring",
        "measure",
        "measures",
        "approximately",
        "about",
        "around",
        "within",
        "from",
        "with",
        "by",
        "as",
        "than",
        "into",
        "mildly",
        "moderately",
        "slightly",
        "small",
        "large",
        "mild",
        "moderate",
        "severe",
        "trace",
        "tiny",
        "residual",
        "suspicious",
        "possible",
    }
)


def _unmapped_in_scope(tokens: list[Token], mods, matches: list[_Match], known: frozenset[str]) -> list[str]:
    """Words a negation/uncertainty trigger scopes over that map to nothing ("no hydronephrosis")."""
    out: list[str] = []
    for m in mods:
        lo, hi = m.scope
        lo, hi = max(lo, 0), min(hi, len(tokens))
        if any(lo <= x.start < hi for x in matches if not (x.start < m.end and x.end > m.start)):
            continue
        rng_ = range(m.end, hi) if m.rule.direction != "backward" else range(lo, m.start)
        words = []
        for i in rng_:
            t = tokens[i]
            if not t.text.isalpha():
                if words:
                    break
                continue
            if t.norm in _STOP or len(t.text) < 3:
                if words:
                    break
                continue
            words.append(t.text)
            if len(words) == 3:
                break
        if words and not all(w.lower() in known for w in words[:1]) or len(words) > 1:
            out.append(" ".join(words))
    return out


def _unknown_terms(text: str, covered: list[tuple[int, int]], known: frozenset[str]) -> list[str]:
    # one byte per character: "is this character inside a recognised span" in O(1), so the scan is
    # linear in the text (a list scan per match made long reports quadratic, issue #18)
    mask = bytearray(len(text) + 1)
    for a, b in covered:
        if b > a:
            mask[a:b] = b"\x01" * (b - a)
    out: list[str] = []
    for pat in _UNKNOWN_PATTERNS:
        for m in pat.finditer(text):
            s, e = m.start(), m.end()
            if mask[s] or mask[e - 1]:
                continue
            word = m.group(0)
            lw = word.lower()
            norm = tokenize(word)[0].norm if tokenize(word) else lw
            if lw in _BENIGN_WORDS or norm in _BENIGN_WORDS:
                continue
            if pat.pattern.startswith(r"\b[A-Z]") and norm in known:
                continue
            out.append(word)
    # measurement names not in the taxonomy: "<words> [measures|of|:|=] <number><unit>" left unassigned
    return out
