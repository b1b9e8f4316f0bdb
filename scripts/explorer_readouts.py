"""Rule explorer_readouts: token read-outs of every head's leading singular directions and its SAD examples, from one
boot of the model and one pass over the explorer's prompt sets."""

from svalign import io, models, pipeline
from svalign.explorer import readouts
from svalign.runtime import configure_torch, rule_logging
from svalign.tables import SAD_PAIRS

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    params, inputs = snakemake.params, snakemake.input
    weights = pipeline.read_weights(inputs.weights)
    model_svd = pipeline.read_svd(inputs.svd, inputs.bases)
    model, _ = models.load_model(params.model, "trained", params.seed, inputs.get("model_dir"))
    sets = {
        name: readouts.PromptSetInput.read(
            model,
            weights,
            model_svd,
            name,
            params.prompts[name],
            io.read_table(inputs[f"pairs_{name}"], SAD_PAIRS, columns=readouts.EXAMPLE_PAIR_COLUMNS),
        )
        for name in params.prompts
    }
    keys = {"model": snakemake.wildcards.model, "variant": "trained"}
    record = io.provenance("explorer_readouts", {**keys, **params.options, "prompts": params.prompts})
    options = readouts.ReadoutOptions(**params.options, chunk_prompts=params.chunk_prompts)
    step = readouts.readouts_step(model, weights, model_svd, sets, options, keys, record)
    io.write_step(step, snakemake.output)
