"""Rule dynamics_prompts: the repeated-segment prompts of our dynamics series, which the SAD stage reads as its
`repeated` prompt set."""

from svalign import io
from svalign.dynamics.config import DynamicsConfig
from svalign.dynamics.task import prompts_columns
from svalign.runtime import configure_torch, rule_logging
from svalign.tables import DYNAMICS_PROMPTS

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    config = DynamicsConfig.from_mapping(snakemake.params.train)
    n_prompts, seed = int(snakemake.params.n_prompts), int(snakemake.params.seed)
    record = io.provenance("dynamics_prompts", {"train": config.to_dict(), "n_prompts": n_prompts}, seed=seed)
    io.write_table(snakemake.output[0], DYNAMICS_PROMPTS, prompts_columns(config, n_prompts, seed), record)
