"""Rule dynamics_checkpoint: one training checkpoint through weights -> SVD -> SAD in one process.

The same steps as rules extract_weights, svd and sad (svalign.pipeline), each reading the Parquet the previous
one wrote, with the model booted once: for a small checkpoint the start-up of three jobs costs more than the work.
"""

from svalign import pipeline
from svalign.runtime import configure_torch, rule_logging

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    params, wildcards, inputs, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    variant = wildcards.variant  # "trained": a checkpoint is its own random-init control
    step, bridge = pipeline.weights_step(params.model, variant, params.seed)
    pipeline.write_step(step, {"weights": out.weights})
    weights = pipeline.read_weights(out.weights)
    pipeline.write_step(pipeline.svd_step(weights, wildcards.model, variant, params.svd, params.device), out)
    model_svd = pipeline.read_svd(out.svd, out.bases)
    keys = {"model": wildcards.model, "variant": variant, "prompt_set": params.prompt_set}
    repeated = pipeline.repeated_texts(inputs.get("prompts"))
    step = pipeline.sad_step(bridge, weights, model_svd, keys, params.sad, params.prompts, repeated)
    pipeline.write_step(step, out)
