"""Rule dynamics_sad: one table of every checkpoint's per-head SAD summary, with task scores, the tracked head
marked."""

from svalign import io
from svalign.dynamics import scores
from svalign.runtime import rule_logging
from svalign.tables import DYNAMICS_HEAD_SCORES, DYNAMICS_SAD, SAD_SUMMARY

with rule_logging(snakemake.log[0]):
    checkpoints = snakemake.params.checkpoints
    summaries = {name: io.to_frame(io.read_table(snakemake.input[f"sad_{name}"], SAD_SUMMARY)) for name in checkpoints}
    head_scores = snakemake.input.get("scores")
    head_scores = io.to_frame(io.read_table(head_scores, DYNAMICS_HEAD_SCORES)) if head_scores else None
    columns = scores.dynamics_sad_columns(summaries, checkpoints, head_scores, snakemake.params.head)
    record = io.provenance("dynamics_sad", {"checkpoints": checkpoints, "head": snakemake.params.head})
    io.write_table(snakemake.output[0], DYNAMICS_SAD, columns, record)
