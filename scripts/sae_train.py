"""Rule sae_train: corpus windows through the trained model, head inputs at the model's sites, one SAE per site."""

from svalign import io, models, pipeline
from svalign.runtime import configure_torch, resolve_device, rule_logging
from svalign.sae import run
from svalign.sae.corpus import SAMPLED
from svalign.tables import SAE_CORPUS

with rule_logging(snakemake.log[0]) as progress:
    configure_torch(snakemake.threads)
    params, inputs = snakemake.params, snakemake.input
    weights = pipeline.read_weights(inputs.weights)
    bridge, _ = models.load_model(params.model, "trained", params.seed, inputs.get("model_dir"))
    corpus = io.read_table(inputs.corpus, SAE_CORPUS)
    texts = corpus.column("text").to_pylist()
    sampled = [i for i, source in enumerate(corpus.column("source").to_pylist()) if source.startswith(SAMPLED)]
    device = resolve_device(params.device)
    model = params.model["name"]
    first = sampled[0] if sampled else None
    step = run.train_step(bridge, weights, texts, params.layers, params.sae, model, device, progress, first)
    io.write_step(step, snakemake.output)
