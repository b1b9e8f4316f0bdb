"""Rules toy_sweep_point / toy_sweep_group: train sweep points of one shape (all seeds and points batched in
one run) and write their rows of the sweep table."""

from svalign import io
from svalign.runtime import configure_torch, resolve_device, rule_logging
from svalign.tables import TOY_SWEEP
from svalign.toy import sweeps, train
from svalign.toy.config import sweep_config

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    points = [dict(point) for point in snakemake.params.points]
    config = sweep_config(snakemake.params.base, points, snakemake.params.seeds)
    run = train.train_toy(config, resolve_device(snakemake.params.device), progress_file=log_stream)
    record = io.provenance("toy_sweep", {"points": points, **config.to_dict()}, seed=list(config.seeds))
    io.write_table(snakemake.output[0], TOY_SWEEP, sweeps.sweep_rows(run), record)
