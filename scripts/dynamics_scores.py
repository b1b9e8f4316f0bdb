"""Rule dynamics_scores: induction and previous-token scores of every head of every checkpoint, with losses."""

from svalign import dynamics
from svalign.runtime import configure_torch, rule_logging

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    config = dynamics.DynamicsConfig.from_mapping(snakemake.params.train)
    scores = dynamics.checkpoint_scores(dynamics.read_manifest(snakemake.input[0]), config)
    dynamics.write_head_scores(scores, snakemake.output[0], "train", config)
