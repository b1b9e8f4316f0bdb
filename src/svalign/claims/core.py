"""Claims, the numbers their verdicts test, and the results table built from them (torch-free).

A verdict compares one or more numbers with the paper's statement under a stated criterion (a :class:`Comparison` each:
"share of heads with median N_recon ≤ 4 > 50 %"). Every tested number carries a bootstrap interval, and its
verdict is

* ``pass`` when the whole interval meets the criterion,
* ``differs`` when none of it does,
* ``inconclusive`` when the interval straddles the criterion, or when there is no number to test (NaN, e.g. no pair
  fired at the configured threshold): our data cannot tell.

A claim with several tests passes when all pass and differs when one differs (:func:`combine`). Where a statistic
admits another reading (N_recon's ordering of the terms), the claim carries the verdict under each
(:class:`Reading`), so the table shows whether the verdict depends on the definition.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from svalign.stats import BootstrapOptions, percentile_interval

__all__ = [
    "VERDICTS",
    "Claim",
    "Comparison",
    "Reading",
    "claims_markdown",
    "claims_table",
    "combine",
    "compare",
    "format_value",
]

VERDICTS = ("pass", "inconclusive", "differs")
_HOLDS = {">": operator.gt, "≥": operator.ge, "<": operator.lt, "≤": operator.le}


def format_value(value: float, spec: str) -> str:
    """``value`` in format ``spec`` (e.g. ``.1%``, ``.3f``); "never" for an infinite crossing, "n/a" for NaN."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "never" if value > 0 else "−∞"
    return format(value, spec)


@dataclass(frozen=True)
class Comparison:
    """One number a verdict compares with its criterion, with its bootstrap interval.

    Attributes:
        statistic: what the number is ("share of heads with median N_recon ≤ 4").
        estimate: its value on our data.
        low, high: the bootstrap percentile interval (equal to ``estimate`` when nothing is resampled).
        op, level: the criterion ``estimate op level`` (op one of >, ≥, <, ≤).
        spec: format of the numbers (``.1%``, ``.3f``, …).
    """

    statistic: str
    estimate: float
    low: float
    high: float
    op: str
    level: float
    spec: str = ".3f"

    def __post_init__(self) -> None:
        if self.op not in _HOLDS:
            raise ValueError(f"unknown comparison {self.op!r}; known: {' '.join(_HOLDS)}")

    @property
    def verdict(self) -> str:
        """pass / differs / inconclusive from the interval (widened to the estimate if it lies outside);
        inconclusive when there is no number to test (NaN: e.g. no pair fired)."""
        if any(math.isnan(value) for value in (self.estimate, self.low, self.high)):
            return "inconclusive"
        holds = _HOLDS[self.op]
        ends = (min(self.low, self.estimate), max(self.high, self.estimate))
        met = [bool(holds(value, self.level)) for value in ends]
        return "pass" if all(met) else "differs" if not any(met) else "inconclusive"

    @property
    def criterion(self) -> str:
        return f"{self.op} {format_value(self.level, self.spec)}"

    @property
    def interval(self) -> str:
        """``estimate [low, high]``, formatted."""
        return (
            f"{format_value(self.estimate, self.spec)} "
            f"[{format_value(self.low, self.spec)}, {format_value(self.high, self.spec)}]"
        )

    @property
    def text(self) -> str:
        """The statistic, its interval, the criterion and the verdict in one phrase."""
        return f"{self.statistic} {self.interval} ({self.criterion}: {self.verdict})"


def compare(
    statistic: str,
    estimate: float,
    samples: Any,
    op: str,
    level: float,
    options: BootstrapOptions,
    spec: str = ".3f",
) -> Comparison:
    """A :class:`Comparison` whose interval is the percentile interval of the bootstrap ``samples [resamples]``."""
    low, high = percentile_interval(np.asarray(samples, dtype=np.float64), options.confidence)
    return Comparison(statistic, float(estimate), float(low), float(high), op, float(level), spec)


def combine(verdicts: Iterable[str]) -> str:
    """A claim's verdict from its tests': differs if one differs, else inconclusive if one is, else pass."""
    verdicts = list(verdicts)
    for verdict in ("differs", "inconclusive"):
        if verdict in verdicts:
            return verdict
    return "pass"


@dataclass(frozen=True)
class Reading:
    """The tests of a claim under one reading of a definition (e.g. N_recon, magnitude ordering)."""

    name: str
    tests: tuple[Comparison, ...]

    @property
    def verdict(self) -> str:
        return combine(test.verdict for test in self.tests)

    @property
    def text(self) -> str:
        """The reading's name, its numbers with their intervals, and its verdict."""
        return f"{self.name}: " + "; ".join(t.interval for t in self.tests) + f" → {self.verdict}"


@dataclass(frozen=True)
class Claim:
    """One row of the results table.

    Attributes:
        key: stable identifier (``single_pair``, ``nrecon_minilm``, ...).
        claim: the paper's statement, in our words.
        paper: the paper's number or qualitative result.
        ours: our measured value(s), formatted.
        setting: model / config the number comes from.
        verdict: ``pass``, ``differs`` or ``inconclusive`` (:func:`combine` of the tests).
        criterion: the acceptance level the verdict applies.
        tests: every number the verdict uses, with its interval.
        resampled: what the intervals resample (prompts, null draws, seeds) and how often.
        confidence: their coverage.
        reading: the reading of a definition the verdict uses ("" when the claim depends on none).
        other_readings: the same tests under the other readings.
    """

    key: str
    claim: str
    paper: str
    ours: str
    setting: str
    verdict: str
    criterion: str
    tests: tuple[Comparison, ...] = ()
    resampled: str = ""
    confidence: float = 0.95
    reading: str = ""
    other_readings: tuple[Reading, ...] = field(default=())

    def __str__(self) -> str:
        return self.ours

    @property
    def deciding(self) -> Comparison | None:
        """The test that sets the verdict (the first with the claim's verdict)."""
        return next((t for t in self.tests if t.verdict == self.verdict), self.tests[0] if self.tests else None)

    @property
    def intervals(self) -> str:
        """Every tested number with its interval and verdict."""
        return "; ".join(test.text for test in self.tests)

    @property
    def readings_text(self) -> str:
        return "; ".join(reading.text for reading in self.other_readings)

    @property
    def rst(self) -> str:
        """One reStructuredText paragraph for a caption (``|`` and ``*`` escaped: RST markup otherwise)."""

        def escape(text: str) -> str:
            return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")

        text = (
            f"**Paper:** {escape(self.paper)}. **Measured here** ({escape(self.setting)}): {escape(self.ours)}. "
            f"**{self.confidence:.0%} intervals** ({escape(self.resampled)}): {escape(self.intervals)}. "
            f"**Verdict: {self.verdict}** ({escape(self.criterion)}"
            + (f"; {escape(self.reading)}" if self.reading else "")
            + ")."
        )
        if self.other_readings:
            text += f" **Other readings:** {escape(self.readings_text)}."
        return text

    def row(self) -> dict[str, Any]:
        """The claim as a row of :data:`svalign.tables.RESULTS_CLAIMS`."""
        deciding = self.deciding
        return {
            "key": self.key,
            "claim": self.claim,
            "paper": self.paper,
            "ours": self.ours,
            "setting": self.setting,
            "verdict": self.verdict,
            "criterion": self.criterion,
            "statistic": deciding.statistic if deciding else "",
            "estimate": deciding.estimate if deciding else math.nan,
            "ci_low": deciding.low if deciding else math.nan,
            "ci_high": deciding.high if deciding else math.nan,
            "confidence": self.confidence,
            "intervals": self.intervals,
            "resampled": self.resampled,
            "reading": self.reading,
            "other_readings": self.readings_text,
        }


def claims_table(claims: Iterable[Claim]) -> dict[str, list]:
    """Column data for :data:`svalign.tables.RESULTS_CLAIMS`."""
    rows = [claim.row() for claim in claims]
    names = list(Claim("", "", "", "", "", "", "").row())
    return {name: [row[name] for row in rows] for name in names}


def claims_markdown(claims: Iterable[Claim], header: str = "") -> str:
    """The results table as Markdown (generated: never edit the file by hand)."""
    claims = list(claims)
    confidence = claims[0].confidence if claims else 0.95
    lines = [header] if header else []
    lines += [
        f"| claim | paper | ours | {confidence:.0%} interval (resampled) | setting | verdict (criterion) "
        "| under other readings |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        verdict = f"**{c.verdict}** ({c.criterion}" + (f"; {c.reading}" if c.reading else "") + ")"
        intervals = "; ".join(f"{t.statistic} {t.interval}" for t in c.tests) + f" ({c.resampled})"
        readings = "; ".join(r.text.replace(f"→ {r.verdict}", f"→ **{r.verdict}**") for r in c.other_readings) or "—"
        cells = [c.claim, c.paper, c.ours, intervals, c.setting, verdict, readings]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
