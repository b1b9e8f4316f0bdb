"""Rule sae_train: corpus windows through the trained model, head inputs at the model's sites, one SAE per site."""

from svalign import io, models, pipeline
from svalign.runtime import configure_torch, resolve_device, rule_logging
from svalign.sae import run
from svalign.tables import SAE_CORPUS

with rule_logging(snakemake.log[0]) as progress:
    configure_torch(snakemake.threads)
    params, inputs = snakemake.params, snakemake.input
    weights = pipeline.read_weights(inputs.weights)
    bridge, _ = models.load_model(params.model, "trained", params.seed, inputs.get("model_dir"))
    texts = io.read_table(inputs.corpus, SAE_CORPUS).column("text").to_pylist()
    device = resolve_device(params.device)
    step = run.train_step(bridge, weights, texts, params.layers, params.sae, params.model["name"], device, progress)
    io.write_step(step, snakemake.output)
