"""Rules toy_sweep_point / toy_sweep_group: train sweep points of one shape (all seeds and points batched in
one run) and write their rows of the sweep table."""

from svalign import io, toy
from svalign.runtime import configure_torch, resolve_device, rule_logging

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    points = [dict(point) for point in snakemake.params.points]
    config = toy.sweep_config(snakemake.params.base, points, snakemake.params.seeds)
    run = toy.train_toy(config, resolve_device(snakemake.params.device), progress_file=log_stream)
    record = io.provenance("toy_sweep", {"points": points, **config.to_dict()}, seed=list(config.seeds))
    io.write_table(snakemake.output[0], toy.TOY_SWEEP, toy.sweep_rows(run), record)
