"""The results table: the paper's claims beside ours."""

from __future__ import annotations

import pyarrow as pa

from svalign.io import Column, TableSchema

__all__ = [
    "RESULTS_CLAIMS",
]

_F64 = pa.float64()


# --------------------------------------------------------------------------------------------------
# Results table (stage results_table)
# --------------------------------------------------------------------------------------------------
RESULTS_CLAIMS = TableSchema(
    "results_claims",
    "The paper's claims beside our measurements (rule results_table); one row per claim and model.",
    (
        Column("key", pa.string(), "stable identifier of the claim (and model)"),
        Column("claim", pa.string(), "the paper's statement, in our words"),
        Column("paper", pa.string(), "the paper's number or qualitative result"),
        Column("ours", pa.string(), "our measured value(s)"),
        Column("setting", pa.string(), "model / config the number comes from"),
        Column(
            "verdict",
            pa.string(),
            "pass (the whole interval meets the criterion), differs (none of it does) or inconclusive (it straddles)",
        ),
        Column("criterion", pa.string(), "the acceptance level the verdict applies"),
        Column("statistic", pa.string(), "the number that sets the verdict (of several: the first with that verdict)"),
        Column("estimate", _F64, "its value on our data (inf: a curve that never crosses its level)"),
        Column("ci_low", _F64, "lower end of its bootstrap percentile interval"),
        Column("ci_high", _F64, "upper end of its bootstrap percentile interval"),
        Column("confidence", _F64, "coverage of the intervals (config report.confidence)"),
        Column("intervals", pa.string(), "every number the verdict uses: estimate [interval] (criterion: verdict)"),
        Column("resampled", pa.string(), "what the intervals resample (prompts, null draws, seeds) and how often"),
        Column("reading", pa.string(), "the reading of a definition the verdict uses (empty: none has another)"),
        Column("other_readings", pa.string(), "the tested numbers and verdicts under the other readings"),
    ),
    version=2,
)
