"""ConText (Harkema et al., J Biomed Inform 2009): negation and uncertainty with scope.

Why hand-written (measured, issue #22): medspaCy 1.3.1, the maintained ConText implementation,
was compared on the 219-sentence hand-written corpus (tests/reports/data/corpus.jsonl) with the
same targets given to both (`benchmarks/report_context.py`, results/report_context.json):
negation F1 0.977 (sonofm) vs 0.881 (medspaCy default rules), uncertainty F1 1.000 vs 0.714,
finding F1 0.988 vs 0.922, 567 vs 28 sentences/s on 2 CPU cores. (sonofm's trigger list grew with
that corpus; medspaCy ran with its default rules.) medspaCy also cannot be installed into sonofm's
environment: it pins ``spacy<3.8``, whose wheels (spaCy 3.7.5, thinc 8.2) fail to import under the
pinned numpy 2.4.6; it ran from a separate numpy-1 target dir. negspaCy handles negation only. So
sonofm keeps its own ConText, implemented directly over its own tokens.

Algorithm (per sentence):
1. Find trigger phrases (longest match first, no overlaps). Pseudo-triggers ("no change",
   "not only") are matched like triggers but have no effect; they only stop the shorter trigger
   inside them from firing.
2. Each trigger has a category (NEGATED / UNCERTAIN / TERMINATE / PSEUDO) and a direction. A
   forward trigger's scope runs to the end of the sentence, stopping at a terminator ("but",
   "however", "although", ";", ...), at the next trigger of a different category, or at its
   `max_scope` in tokens. A backward trigger's scope runs back the same way. A comma ends a forward
   scope unless the rest of the clause is an "or"/"nor" list ("no calcifications, shadowing or
   vascularity"); it always ends a backward scope.
3. A target (a token span) takes the status of the nearest trigger whose scope contains its first
   token; uncertainty is kept as its own status (`Status.UNCERTAIN`), not folded into negation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sonofm.reports.schema import Status
from sonofm.reports.text import Token, norm_tokens

NEGATED = "NEGATED_EXISTENCE"
UNCERTAIN = "POSSIBLE_EXISTENCE"
PSEUDO = "PSEUDO"
TERMINATE = "TERMINATE"


@dataclass(frozen=True)
class ContextRule:
    """One ConText trigger: phrase, category and direction ("forward"|"backward"|"bidirectional")."""

    phrase: str
    category: str
    direction: str = "forward"
    max_scope: int | None = None


def _rules(category: str, direction: str, phrases: str, max_scope: int | None = None) -> list[ContextRule]:
    return [ContextRule(p.strip(), category, direction, max_scope) for p in phrases.split("|") if p.strip()]


# Trigger lexicon after Harkema et al. 2009 / the pyConText and medspaCy default rules, restricted
# to what ultrasound reports use.
DEFAULT_RULES: tuple[ContextRule, ...] = tuple(
    _rules(
        NEGATED,
        "forward",
        "no|without|negative for|absence of|free of|no evidence of|no sonographic evidence of|"
        "no definite|no definite evidence of|no obvious|no significant|no suspicious|nor|neither|"
        "no sign of|no signs of|there is no|there are no|never|denies|rather than|"
        "no visible|no demonstrable|no detectable|lack of|lacks|lacking|no longer|no residual",
    )
    + _rules(NEGATED, "forward", "loss of|effacement of|effaced", max_scope=3)
    # bare "not" negates the word it precedes ("not circumscribed hypoechoic mass": only the margin)
    + _rules(NEGATED, "forward", "non|w/o|not|is not|are not|was not|were not|does not|do not", max_scope=1)
    + _rules(
        NEGATED,
        "backward",
        "not seen|not identified|not present|not visualised|not visualized|not demonstrated|"
        "not detected|not appreciated|not evident|is absent|are absent|none|excluded|ruled out|"
        "was ruled out|is not seen|are not seen|not noted|none seen|none identified|none detected|"
        "resolved|not demonstrable",
    )
    + _rules(
        UNCERTAIN,
        "forward",
        "possible|possibly|probable|probably|questionable|suspicious for|suspected|suspect|"
        "may represent|may be|may reflect|could represent|could be|might|might be|cannot exclude|"
        "can not exclude|cannot rule out|can not rule out|equivocal|concerning for|"
        "worrisome for|suggestive of|consider|considered|differential include|differential diagnosis|"
        "versus|vs|rule out|r / o|query|not certain|uncertain|indeterminate|"
        "cannot exclude the possibility of|"
        "cannot entirely exclude|likely|presumed|presumably|question of|? of",
    )
    + _rules(
        UNCERTAIN,
        "backward",
        "cannot be excluded|not excluded|not ruled out|can not be excluded|"
        "is possible|are possible|is questioned|not entirely excluded|is suspected|are suspected|"
        "cannot be ruled out|is likely|are likely|is probable|to be confirmed|needs confirmation|"
        "is not excluded|are not excluded|is queried|query",
    )
    + _rules(NEGATED, "backward", "negative|is negative|are negative", max_scope=4)
    + _rules(NEGATED, "bidirectional", "absent", max_scope=4)
    + _rules(UNCERTAIN, "bidirectional", "?", max_scope=2)
    + _rules(
        PSEUDO,
        "pseudo",
        "no change|no significant change|no interval change|no increase|no decrease|not only|"
        "not necessarily|without difficulty|no further|not cause|gram negative|no new|not change|"
        "no definite change|without change|not certain whether|not certain if",
    )
    + _rules(
        TERMINATE,
        "terminate",
        "but|however|although|though|except|apart from|aside from|which|whereas|while|yet|;|"
        "with|and there is|there is|there are|otherwise|still|nevertheless|present|seen|noted|identified|:",
    )
)


@dataclass
class Modifier:
    """A matched trigger with its token span and computed scope (half-open token ranges)."""

    rule: ContextRule
    start: int
    end: int
    scope: tuple[int, int] = (0, 0)

    @property
    def category(self) -> str:
        return self.rule.category


class ConText:
    """ConText engine over pre-tokenised sentences (see the module docstring for the algorithm)."""

    def __init__(self, rules: Sequence[ContextRule] = DEFAULT_RULES) -> None:
        self.rules = tuple(rules)
        self._index: dict[tuple[str, ...], list[ContextRule]] = {}
        for r in self.rules:
            self._index.setdefault(norm_tokens(r.phrase), []).append(r)
        self._maxlen = max((len(k) for k in self._index), default=1)

    def match(self, norms: Sequence[str], blocked: set[int] | None = None) -> list[Modifier]:
        """Trigger matches, longest first, non-overlapping; `blocked` token indices (targets) never match."""
        blocked = blocked or set()
        found: list[Modifier] = []
        i = 0
        n = len(norms)
        while i < n:
            hit = None
            for L in range(min(self._maxlen, n - i), 0, -1):
                key = tuple(norms[i : i + L])
                if key in self._index and not any(j in blocked for j in range(i, i + L)):
                    # a phrase may be registered in two categories ("absent" etc.): prefer non-terminate
                    rules = sorted(self._index[key], key=lambda r: r.category == TERMINATE)
                    hit = Modifier(rules[0], i, i + L)
                    break
            if hit is None:
                i += 1
                continue
            found.append(hit)
            i = hit.end
        return found

    def scopes(self, norms: Sequence[str], mods: list[Modifier]) -> list[Modifier]:
        """Compute each modifier's scope; returns the effective (negation/uncertainty) modifiers."""
        n = len(norms)
        terms = [m for m in mods if m.category == TERMINATE]
        active = [m for m in mods if m.category in (NEGATED, UNCERTAIN)]
        commas = [i for i, t in enumerate(norms) if t == ","]
        out: list[Modifier] = []
        for m in active:
            direction = m.rule.direction
            lo, hi = m.start, m.end
            if direction in ("forward", "bidirectional"):
                end = n
                for t in terms:
                    if t.start >= m.end:
                        end = min(end, t.start)
                for o in active:
                    if (
                        o is not m
                        and o.start >= m.end
                        and o.category != m.category
                        and o.rule.direction != "backward"
                        and o.rule.max_scope is None  # "possible non-shadowing focus": still possible
                    ):
                        end = min(end, o.start)
                for c in commas:
                    if c >= m.end and c < end:
                        rest = norms[c + 1 : end]
                        if "or" in rest or "nor" in rest:
                            continue
                        end = c
                        break
                if m.rule.max_scope is not None:
                    end = min(end, m.end + m.rule.max_scope)
                hi = end
            if direction in ("backward", "bidirectional"):
                begin = 0
                for t in terms:
                    if t.end <= m.start:
                        begin = max(begin, t.end)
                for o in active:
                    if (
                        o is not m
                        and o.end <= m.start
                        and o.category != m.category
                        and o.rule.direction == "backward"
                    ):
                        begin = max(begin, o.end)
                for c in commas:
                    if c < m.start:
                        begin = max(begin, c + 1)
                if m.rule.max_scope is not None:
                    begin = max(begin, m.start - m.rule.max_scope)
                lo = begin
            m.scope = (lo, hi)
            out.append(m)
        return out

    def status_of(self, mods: list[Modifier], span: tuple[int, int]) -> tuple[Status, Modifier | None]:
        """Status of the target covering tokens `span` given scoped modifiers (nearest modifier wins)."""
        first = span[0]
        best: Modifier | None = None
        best_d = 10**9
        for m in mods:
            lo, hi = m.scope
            if lo <= first < hi and not (m.start <= first < m.end):
                d = first - m.end if first >= m.end else m.start - span[1]
                if d < best_d:
                    best, best_d = m, d
        if best is None:
            return Status.PRESENT, None
        return (Status.ABSENT if best.category == NEGATED else Status.UNCERTAIN), best

    def assign(
        self, tokens: Sequence[Token] | Sequence[str], targets: Sequence[tuple[int, int]]
    ) -> list[Status]:
        """Statuses for target token spans in one sentence (tokens: `Token`s or normalised strings)."""
        norms = [t.norm if isinstance(t, Token) else t for t in tokens]
        blocked = {i for s, e in targets for i in range(s, e)}
        mods = self.scopes(norms, self.match(norms, blocked))
        return [self.status_of(mods, span)[0] for span in targets]


_DEFAULT: ConText | None = None


def default_context() -> ConText:
    """The shared engine with `DEFAULT_RULES` (built once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ConText()
    return _DEFAULT
