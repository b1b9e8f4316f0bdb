"""Rule toy_train: train one toy experiment; write its weights, metrics and trajectory Parquet."""

from svalign import io
from svalign.runtime import configure_torch, resolve_device, rule_logging
from svalign.tables import TOY_METRICS, TOY_TRAJECTORY, TOY_WEIGHTS
from svalign.toy import train
from svalign.toy.config import ToyConfig

SCHEMAS = {"weights": TOY_WEIGHTS, "metrics": TOY_METRICS, "trajectory": TOY_TRAJECTORY}

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    config = ToyConfig.from_mapping(snakemake.params.experiment)
    run = train.train_toy(config, resolve_device(snakemake.params.device), progress_file=log_stream)
    experiment = snakemake.wildcards.experiment
    record = io.provenance("toy", {"experiment": experiment, **config.to_dict()}, seed=list(config.seeds))
    for name, columns in train.run_columns(run, experiment).items():
        io.write_table(getattr(snakemake.output, name), SCHEMAS[name], columns, record)
