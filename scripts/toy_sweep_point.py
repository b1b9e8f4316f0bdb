"""Rule toy_sweep_point: train one sweep point (all seeds batched) and write its rows of the sweep table."""

from svalign import io, toy
from svalign.runtime import configure_torch, resolve_device, rule_logging

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    point = snakemake.params.point
    config = toy.sweep_config(snakemake.params.base, point, snakemake.params.seeds)
    run = toy.train_toy(config, resolve_device(snakemake.params.device), progress_file=log_stream)
    record = io.provenance("toy_sweep", {"point": dict(point), **config.to_dict()}, seed=list(config.seeds))
    io.write_table(snakemake.output[0], toy.TOY_SWEEP, toy.sweep_rows(run, point), record)
