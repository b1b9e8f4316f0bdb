"""Rule toy_anisotropy: head trained alone on frozen features of swept interference, with the closed form."""

from svalign import io
from svalign.runtime import configure_torch, resolve_device, rule_logging
from svalign.tables import TOY_ANISOTROPY
from svalign.toy import sweeps
from svalign.toy.config import ToyConfig

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    sweep = snakemake.params.anisotropy
    config = ToyConfig.from_mapping(sweep["experiment"])
    data = sweeps.run_anisotropy(
        config,
        sweep["interference_norms"],
        sweep["feature_seeds"],
        resolve_device(snakemake.params.device),
        progress_file=log_stream,
    )
    record = io.provenance("toy_anisotropy", sweep, seed=list(sweep["feature_seeds"]))
    io.write_table(snakemake.output[0], TOY_ANISOTROPY, data, record)
