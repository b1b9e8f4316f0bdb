"""Rule svd: batched factored SVD of every head's (augmented, per-RoPE-offset) QK form."""

from svalign import io, models, svd, tables
from svalign.runtime import configure_torch, resolve_device, rule_logging

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    config = snakemake.params.svd
    weights = models.read_head_weights(io.read_table(snakemake.input[0], tables.HEAD_WEIGHTS))
    result = svd.model_svd(weights, config["max_offset"], resolve_device(snakemake.params.device), config["precision"])
    svd.check_reconstruction(result, config["max_recon_error"])
    svd_data, bases_data = svd.svd_tables(result, snakemake.wildcards.model, snakemake.wildcards.variant)
    record = io.provenance(
        "svd", {"model": snakemake.wildcards.model, "variant": snakemake.wildcards.variant, **config}
    )
    io.write_table(snakemake.output.svd, tables.HEAD_SVD, svd_data, record)
    io.write_table(snakemake.output.bases, tables.HEAD_SVD_BASES, bases_data, record)
