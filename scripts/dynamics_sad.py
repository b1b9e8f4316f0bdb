"""Rule dynamics_sad: one table of every checkpoint's per-head SAD summary, with task scores, the tracked head
marked."""

from svalign import dynamics, io, sad
from svalign.runtime import rule_logging

with rule_logging(snakemake.log[0]):
    checkpoints = snakemake.params.checkpoints
    summaries = {
        name: io.to_frame(io.read_table(snakemake.input[f"sad_{name}"], sad.SAD_SUMMARY)) for name in checkpoints
    }
    scores = snakemake.input.get("scores")
    scores = io.to_frame(io.read_table(scores, dynamics.DYNAMICS_HEAD_SCORES)) if scores else None
    table = dynamics.dynamics_sad_table(summaries, checkpoints, scores, snakemake.params.head)
    record = io.provenance("dynamics_sad", {"checkpoints": checkpoints, "head": snakemake.params.head})
    io.write_table(snakemake.output[0], dynamics.DYNAMICS_SAD, table, record)
