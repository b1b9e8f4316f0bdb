"""Rule sae_sampled_text: sequences sampled from SmolLM2-135M (seeded), as a corpus table with its digest."""

from svalign import io
from svalign.runtime import configure_torch, rule_logging
from svalign.sae.corpus import SAMPLED, corpus_digest, sample_text
from svalign.tables import SAE_CORPUS

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    options = snakemake.params.sampled
    texts = sample_text(snakemake.input.model_dir, options["sequences"], options["tokens"], options["seed"])
    record = io.provenance("sae_sampled_text", {**options, **corpus_digest(texts)}, seed=options["seed"])
    columns = {"document": list(range(len(texts))), "source": [f"{SAMPLED} {i}" for i in range(len(texts))]}
    io.write_table(snakemake.output[0], SAE_CORPUS, {**columns, "text": texts}, record)
