"""Rule extract_weights: per-head W_Q/W_K (+ biases, RoPE) of one model variant, through TransformerBridge."""

from svalign import io, models, tables
from svalign.runtime import configure_torch, rule_logging

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    model, variant, seed = snakemake.params.model, snakemake.wildcards.variant, snakemake.params.seed
    weights, model_dir = models.load_head_weights(model, variant, seed, smollm2_dir=snakemake.input.get("model_dir"))
    record = io.provenance(
        "extract_weights",
        {**model, "variant": variant, "model_dir": str(model_dir), "processing": weights.processing},
        seed=seed if variant == "random" else None,
    )
    io.write_table(
        snakemake.output[0], tables.HEAD_WEIGHTS, models.head_weights_table(weights, model["name"], variant), record
    )
