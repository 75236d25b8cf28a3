"""Tokenisation and normalisation shared by the parser, ConText and the phrase matcher.

Everything that is matched against report text (taxonomy synonyms, ConText triggers, measurement
names) goes through the same `norm_tokens` so that "Taller-than-wide", "taller than wide" and
"taller than wide" compare equal and plurals ("calcifications", "pressures") meet their singular.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# words (letters/digits, an apostrophe or prime inside: "e/e'"), numbers with decimals, or one
# punctuation char. "/" stays a separate token so "E/e'" -> ["e", "/", "e'"].
_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)?(?![^\W_])|[^\W_]+(?:['’′][^\W\d_]*)?|[^\w\s]", re.UNICODE)
_NO_STEM = frozenset({"ss", "us", "is", "as", "os"})


@dataclass(frozen=True)
class Token:
    """A token of the original text: its surface form, normalised form and char span."""

    text: str
    norm: str
    start: int
    end: int


def stem(word: str) -> str:
    """Very light plural folding (calcifications -> calcification); applied to both sides of a match."""
    if len(word) > 3 and word.endswith("s") and word[-2:] not in _NO_STEM:
        return word[:-1]
    return word


# sonographer shorthand -> the word the vocabulary uses
ABBREVIATIONS: dict[str, str] = {
    "rt": "right",
    "lt": "left",
    "r": "right",
    "l": "left",
    "bilat": "bilateral",
    "ant": "anterior",
    "post": "posterior",
    "lat": "lateral",
    "med": "medial",
    "sup": "superior",
    "inf": "inferior",
    "prob": "probable",
    "poss": "possible",
    "approx": "approximately",
    "transv": "transverse",
    "calc": "calcification",
    "calcs": "calcification",
    "microcalcs": "microcalcification",
    "microcalc": "microcalcification",
    "vasc": "vascularity",
    "het": "heterogeneous",
    "neg": "negative",
    "hypoech": "hypoechoic",
    "hyperech": "hyperechoic",
    "isoech": "isoechoic",
    "mod": "moderate",
    "sev": "severe",
    "lge": "large",
    "sml": "small",
    "nl": "normal",
    "ext": "extension",
    "hypervasc": "hypervascular",
    "avasc": "avascular",
    "lns": "lymph nodes",
    "ln": "lymph node",
    "bilaterally": "bilaterally",
    "sept": "septation",
    "septs": "septation",
    "prox": "proximal",
    "dist": "distal",
}


def normalise_word(word: str) -> str:
    w = unicodedata.normalize("NFKC", word).lower().replace("’", "'").replace("′", "'")
    w = ABBREVIATIONS.get(w, w)
    return stem(w)


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens with character offsets; hyphens become separators."""
    out: list[Token] = []
    for m in _TOKEN_RE.finditer(text):
        s = m.group(0)
        if s in {"-", "‐", "‑", "–"} and out and m.start() == out[-1].end:
            # intra-word hyphen ("taller-than-wide", "non-shadowing"): a plain separator
            continue
        if s == "/" and out and out[-1].norm == "c" and out[-1].end == m.start():
            # "c/w" = consistent with: one token, so the "w" is not read as "with" + a finding
            w = out.pop()
            out.append(Token(text[w.start : m.end()], "c/", w.start, m.end()))
            continue
        if out and out[-1].norm == "c/" and s.lower() == "w" and m.start() == out[-1].end:
            w = out.pop()
            out.append(Token(text[w.start : m.end()], "c/w", w.start, m.end()))
            continue
        if s == "/" and out and out[-1].norm == "w" and out[-1].end == m.start():
            # "w/" = with, "w/o" = without
            w = out.pop()
            out.append(Token(text[w.start : m.end()], "with", w.start, m.end()))
            continue
        if (
            out
            and out[-1].norm == "with"
            and out[-1].text.lower() == "w/"
            and s.lower() == "o"
            and m.start() == out[-1].end
        ):
            w = out.pop()
            out.append(Token(text[w.start : m.end()], "without", w.start, m.end()))
            continue
        out.append(Token(s, normalise_word(s), m.start(), m.end()))
    return out


def norm_tokens(phrase: str) -> tuple[str, ...]:
    """Normalised token tuple of a vocabulary phrase (the key used by every matcher)."""
    return tuple(t.norm for t in tokenize(phrase))


# Sentence boundaries: a full stop not between digits, "!", ";", newlines; "?" is NOT a boundary
# because ConText uses it as an uncertainty cue ("septation?").
_SENT_RE = re.compile(r"(?<!\d)\.(?!\d)|(?<=\d)\.(?=\s|$)|!|;|\n+")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of sentences (boundaries: '.', '!', newlines; decimals are kept)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENT_RE.finditer(text):
        if m.start() > start and text[start : m.start()].strip():
            spans.append((start, m.start()))
        start = m.end()
    if start < len(text) and text[start:].strip():
        spans.append((start, len(text)))
    return spans
