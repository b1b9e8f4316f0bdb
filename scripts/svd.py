"""Rule svd: batched factored SVD of every head's (augmented, per-RoPE-offset) QK form."""

from svalign import io, pipeline
from svalign.runtime import configure_torch, rule_logging

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    weights = pipeline.read_weights(snakemake.input[0])
    wildcards, params = snakemake.wildcards, snakemake.params
    step = pipeline.svd_step(weights, wildcards.model, wildcards.variant, params.svd, params.device)
    io.write_step(step, snakemake.output)
