"""Rule toy_train: train one toy experiment; write its weights, metrics and trajectory Parquet."""

from svalign import toy
from svalign.runtime import configure_torch, resolve_device, rule_logging

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    config = toy.ToyConfig.from_mapping(snakemake.params.experiment)
    run = toy.train_toy(config, resolve_device(snakemake.params.device), progress_file=log_stream)
    toy.write_run(run, snakemake.wildcards.experiment, **snakemake.output)
