"""Rule dynamics_checkpoint: one training checkpoint through weights -> SVD -> SAD in one process.

The same steps as rules extract_weights, svd and sad (svalign.pipeline.checkpoint_chain), each reading the Parquet
the previous one wrote, with the model booted once: for a small checkpoint the start-up of three jobs costs more
than the work.
"""

from svalign import pipeline
from svalign.runtime import configure_torch, rule_logging

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    pipeline.checkpoint_chain(
        snakemake.params.model,
        {name: getattr(snakemake.output, name) for name in pipeline.CHECKPOINT_OUTPUTS},
        repeated=pipeline.repeated_texts(snakemake.input.get("prompts")),
        **pipeline.chain_options(snakemake.params),
    )
