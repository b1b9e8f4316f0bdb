"""Rule sae_align: every site head's singular vectors against the SAE dictionary, and the latent-pair attribution."""

from svalign import io, models, pipeline
from svalign.runtime import configure_torch, rule_logging
from svalign.sad.config import SADConfig
from svalign.sae import run
from svalign.tables import SAE_DICTIONARY, SAE_QUALITY

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    params, inputs = snakemake.params, snakemake.input
    weights = pipeline.read_weights(inputs.weights)
    svds = {v: pipeline.read_svd(inputs[f"svd_{v}"], inputs[f"bases_{v}"]) for v in params.variants}
    bridge, _ = models.load_model(params.model, "trained", params.seed, inputs.get("model_dir"))
    tables = io.read_table(inputs.dictionary, SAE_DICTIONARY), io.read_table(inputs.quality, SAE_QUALITY)
    name = params.model["name"]
    sad_config = SADConfig.from_mapping(params.sad)
    step = run.analyse_step(bridge, weights, svds, *tables, params.sae, sad_config, params.prompts, name)
    io.write_step(step, snakemake.output)
