"""Rule sae_corpus: the offline corpus (standard-library docstrings) as a table, with its digest in provenance."""

from svalign import io
from svalign.runtime import rule_logging
from svalign.sae.corpus import build_corpus, corpus_digest
from svalign.tables import SAE_CORPUS

with rule_logging(snakemake.log[0]):
    corpus = build_corpus()
    digest = corpus_digest(corpus["text"])
    record = io.provenance("sae_corpus", {"modules": corpus["modules"], "missing": corpus["missing"], **digest})
    columns = {name: corpus[name] for name in SAE_CORPUS.column_names}
    io.write_table(snakemake.output[0], SAE_CORPUS, columns, record)
