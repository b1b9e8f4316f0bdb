"""Rule dynamics_scores: induction and previous-token scores of every head of every checkpoint, with losses."""

from svalign import io
from svalign.dynamics import scores
from svalign.dynamics.config import DynamicsConfig
from svalign.runtime import configure_torch, rule_logging
from svalign.tables import DYNAMICS_HEAD_SCORES

MODEL = "train"  # the series' name in its tables

with rule_logging(snakemake.log[0]):
    configure_torch(snakemake.threads)
    config = DynamicsConfig.from_mapping(snakemake.params.train)
    head_scores = scores.checkpoint_scores(scores.read_manifest(snakemake.input[0]), config)
    record = io.provenance("dynamics_scores", {"model": MODEL, **config.to_dict()}, seed=config.seed)
    columns = scores.head_scores_columns(head_scores, MODEL, config.seed)
    io.write_table(snakemake.output[0], DYNAMICS_HEAD_SCORES, columns, record)
