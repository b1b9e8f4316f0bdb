"""Rule extract_weights: per-head W_Q/W_K (+ biases, RoPE) of one model variant of a verified family (through
TransformerBridge or the family's transformers modules, svalign.families); a refused family fails here, saying why."""

from svalign import io, pipeline
from svalign.runtime import configure_torch, rule_logging

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    params = snakemake.params
    step, _ = pipeline.weights_step(
        params.model, snakemake.wildcards.variant, params.seed, snakemake.input.get("model_dir")
    )
    io.write_step(step, {"weights": snakemake.output[0]})
