"""Rule sad: sparse attention decomposition of every head on one prompt set, real and under the rotation null."""

from svalign import io, models, pipeline
from svalign.runtime import configure_torch, rule_logging
from svalign.sad.config import SADConfig

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    params, wildcards, inputs = snakemake.params, snakemake.wildcards, snakemake.input
    weights = pipeline.read_weights(inputs.weights)
    model_svd = pipeline.read_svd(inputs.svd, inputs.bases)
    bridge, _ = models.load_model(params.model, wildcards.variant, params.seed, inputs.get("model_dir"))
    keys = {"model": wildcards.model, "variant": wildcards.variant, "prompt_set": wildcards.prompt_set}
    # The repeated prompt set is a table written by the dynamics stage (rule dynamics_prompts).
    repeated = pipeline.repeated_texts(inputs.get("prompts"))
    config = SADConfig.from_mapping(params.sad)
    step = pipeline.sad_step(bridge, weights, model_svd, keys, config, params.prompts, repeated)
    io.write_step(step, snakemake.output)
