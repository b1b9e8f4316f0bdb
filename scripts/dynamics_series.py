"""Rule dynamics_series: every checkpoint of our training series through weights -> SVD -> SAD in one process.

Each checkpoint takes the steps of rule dynamics_checkpoint (svalign.pipeline.checkpoint_chain) and writes the same
files; one process pays the imports once instead of once per checkpoint.
"""

from tqdm.auto import tqdm

from svalign import pipeline
from svalign.runtime import configure_torch, rule_logging

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    params, out = snakemake.params, snakemake.output
    repeated = pipeline.repeated_texts(snakemake.input.get("prompts"))
    for index, model in enumerate(tqdm(params.models, desc="checkpoints", file=log_stream, mininterval=5.0)):
        paths = {name: getattr(out, name)[index] for name in pipeline.CHECKPOINT_OUTPUTS}
        pipeline.checkpoint_chain(model, paths, repeated=repeated, **pipeline.chain_options(params))
