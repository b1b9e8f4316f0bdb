"""Rule sae_sweep_summary: every SAE sweep point's quality, alignment, controls and verdicts, and their stability
across seeds, as one table."""

from svalign import io
from svalign.claims.sae_sweep import sweep_rows
from svalign.runtime import rule_logging
from svalign.tables import SAE_SWEEP

with rule_logging(snakemake.log[0]):
    params, model = snakemake.params, snakemake.wildcards.model
    points = [
        (point, {table: snakemake.input[f"{table}_{index}"] for table in ("heads", "sites", "attribution")})
        for index, point in enumerate(params.points)
    ]
    columns = sweep_rows(points, model, params.bootstrap)
    record = io.provenance("sae_sweep_summary", {"model": model, "points": params.points})
    io.write_table(snakemake.output[0], SAE_SWEEP, columns, record)
