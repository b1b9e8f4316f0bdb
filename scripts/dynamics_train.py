"""Rule dynamics_train: train the small transformer from scratch (or resume), one checkpoint per scheduled step."""

from svalign import dynamics
from svalign.runtime import configure_torch, resolve_device, rule_logging

with rule_logging(snakemake.log[0]) as log_stream:
    configure_torch(snakemake.threads)
    config = dynamics.DynamicsConfig.from_mapping(snakemake.params.train)
    checkpoint_dir = snakemake.params.checkpoint_dir
    run = dynamics.train_transformer(
        config,
        checkpoint_dir,
        resolve_device(snakemake.params.device),
        resume=dynamics.can_resume(checkpoint_dir, config),
        progress_file=log_stream,
    )
    dynamics.write_training_log(run, snakemake.output.log_table, "train")
    dynamics.write_manifest(snakemake.output.manifest, checkpoint_dir, config)
