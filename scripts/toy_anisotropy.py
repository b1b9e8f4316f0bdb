"""Rule toy_anisotropy: head trained alone on frozen features of swept interference, with the closed form."""

from svalign import io, toy
from svalign.runtime import configure_torch, resolve_device, rule_logging

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    sweep = snakemake.params.anisotropy
    config = toy.ToyConfig.from_mapping(sweep["experiment"])
    data = toy.run_anisotropy(
        config,
        sweep["interference_norms"],
        sweep["feature_seeds"],
        resolve_device(snakemake.params.device),
        progress_file=log_stream,
    )
    record = io.provenance("toy_anisotropy", sweep, seed=list(sweep["feature_seeds"]))
    io.write_table(snakemake.output[0], toy.TOY_ANISOTROPY, data, record)
