"""Rule explorer_spectra: degeneracy-aware spectra (blocks of near-equal σ, numerical rank) of every head and offset."""

from svalign import degeneracy, io
from svalign.runtime import rule_logging
from svalign.tables import HEAD_DEGENERACY_BLOCKS, HEAD_SVD

with rule_logging(snakemake.log[0]):
    options = snakemake.params.options
    svd = degeneracy.svd_columns(io.read_table(snakemake.input[0], HEAD_SVD, columns=degeneracy.SVD_COLUMNS))
    columns = degeneracy.spectra_columns(
        svd, options["degeneracy_gap"], options["rank_rtol"], options["top_directions"]
    )
    keys = {"model": snakemake.wildcards.model, "variant": snakemake.wildcards.variant}
    record = io.provenance("explorer_spectra", {**keys, **options})
    io.write_table(snakemake.output[0], HEAD_DEGENERACY_BLOCKS, columns, record)
