"""Rule dynamics_train: train the small transformer from scratch (or resume), one checkpoint per scheduled step."""

from svalign import io
from svalign.dynamics import scores, train
from svalign.dynamics.config import DynamicsConfig
from svalign.runtime import configure_torch, resolve_device, rule_logging
from svalign.tables import DYNAMICS_TRAINING_LOG

MODEL = "train"  # the series' name in its tables

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    config = DynamicsConfig.from_mapping(snakemake.params.train)
    checkpoint_dir = snakemake.params.checkpoint_dir
    run = train.train_transformer(
        config,
        checkpoint_dir,
        resolve_device(snakemake.params.device),
        resume=train.can_resume(checkpoint_dir, config),
        progress_file=log_stream,
    )
    record = io.provenance("dynamics_train", {"model": MODEL, **config.to_dict()}, seed=config.seed)
    io.write_table(snakemake.output.log_table, DYNAMICS_TRAINING_LOG, train.training_log_columns(run, MODEL), record)
    scores.write_manifest(snakemake.output.manifest, checkpoint_dir, config)
