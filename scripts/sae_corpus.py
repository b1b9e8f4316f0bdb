"""Rule sae_corpus: the offline corpus (standard-library docstrings, then any sampled text) as one table, with its
digest in provenance."""

from svalign import io
from svalign.runtime import rule_logging
from svalign.sae.corpus import build_corpus, corpus_digest
from svalign.tables import SAE_CORPUS

with rule_logging(snakemake.log[0]):
    corpus = build_corpus()
    sampled = io.read_table(snakemake.input.sampled, SAE_CORPUS) if hasattr(snakemake.input, "sampled") else None
    columns = {name: list(corpus[name]) for name in SAE_CORPUS.column_names}
    if sampled is not None:
        columns["source"] += sampled.column("source").to_pylist()
        columns["text"] += sampled.column("text").to_pylist()
        columns["document"] = list(range(len(columns["text"])))
    digest = corpus_digest(columns["text"])
    record = io.provenance(
        "sae_corpus",
        {
            "modules": corpus["modules"],
            "missing": corpus["missing"],
            "sampled_documents": 0 if sampled is None else sampled.num_rows,
            **digest,
        },
    )
    io.write_table(snakemake.output[0], SAE_CORPUS, columns, record)
