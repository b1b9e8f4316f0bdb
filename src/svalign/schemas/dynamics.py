"""Training-dynamics tables: the training log, the repeated-segment prompts, head scores and SAD over training."""

from __future__ import annotations

import pyarrow as pa

from svalign.io import Column, TableSchema

__all__ = [
    "DYNAMICS_HEAD_SCORES",
    "DYNAMICS_PROMPTS",
    "DYNAMICS_SAD",
    "DYNAMICS_TRAINING_LOG",
]

_STR, _I64, _F64 = pa.string(), pa.int64(), pa.float64()


# --------------------------------------------------------------------------------------------------
# Training dynamics (stage dynamics)
# --------------------------------------------------------------------------------------------------
_RUN_KEYS = (
    Column("model", _STR, "name of the trained dynamics model (key of config `dynamics`)"),
    Column("seed", _I64, "training seed (init and data)"),
)
DYNAMICS_TRAINING_LOG = TableSchema(
    "dynamics_training_log",
    "Training-batch losses of the from-scratch transformer on repeated random segments, every log_every updates.",
    (
        *_RUN_KEYS,
        Column("step", _I64, "optimiser update (1-based); the losses are of the weights before this update"),
        Column("loss", _F64, "mean next-token cross-entropy over all positions (nats)"),
        Column("icl_loss", _F64, "cross-entropy on the predictable tokens of the repeated copy (in-context loss)"),
        Column("lr", _F64, "learning rate of this update"),
    ),
)
DYNAMICS_PROMPTS = TableSchema(
    "dynamics_prompts",
    "The repeated-segment prompts of our dynamics series (rule dynamics_prompts): sequences of the training "
    "distribution, drawn from their own stream, that the SAD stage reads as its `repeated` prompt set.",
    (
        Column("prompt", _I64, "prompt index"),
        Column("text", _STR, "the sequence as words t<i>, one token each under the series' tokenizer"),
        Column("start", _I64, "position where the repeated segment starts"),
        Column("period", _I64, "segment length: the copy starts at start + period"),
    ),
)
DYNAMICS_HEAD_SCORES = TableSchema(
    "dynamics_head_scores",
    "Induction and previous-token scores of every head of every checkpoint, with the checkpoint's losses on a "
    "fixed evaluation batch of repeated random segments. One row per (step, layer, head).",
    (
        *_RUN_KEYS,
        Column("step", _I64, "checkpoint step (optimiser updates; 0 = init)"),
        Column("layer", _I64, "layer index"),
        Column("head", _I64, "head index"),
        Column(
            "induction_score", _F64, "mean attention from each token of the copy to the key after its first occurrence"
        ),
        Column("previous_token_score", _F64, "mean attention from position t to t − 1"),
        Column("loss", _F64, "checkpoint's mean next-token cross-entropy on the evaluation batch (nats)"),
        Column("icl_loss", _F64, "checkpoint's cross-entropy on the predictable tokens of the copy"),
    ),
)
DYNAMICS_SAD = TableSchema(
    "dynamics_sad",
    "Per-head SAD summary of every training checkpoint (real and rotation null), with the checkpoint's task "
    "scores and losses (our series) and the tracked head marked.",
    (
        Column("checkpoint", _STR, "model name of the checkpoint (dyn_stepNNNNNN or dyn_cNNN)"),
        Column("series", _STR, "ours (trained here) or external"),
        Column("step", _I64, "training step of the checkpoint"),
        Column("layer", _I64, "layer index"),
        Column("head", _I64, "head index"),
        Column("chosen", pa.bool_(), "the tracked head (config dynamics.head, else best induction score at the end)"),
        Column("n_pairs", _I64, "firing pairs"),
        Column("median_n_recon", _F64, "median N_recon over pairs with ℓ̃ > 0"),
        Column("null_median_n_recon", _F64, "the same under the rotation null"),
        Column("median_sparseness", _F64, "median Rolls–Tovée S (lower = sparser)"),
        Column("null_median_sparseness", _F64, "the same under the rotation null"),
        Column("induction_score", _F64, "induction score of the head (NaN for external checkpoints)"),
        Column("previous_token_score", _F64, "previous-token score of the head (NaN for external checkpoints)"),
        Column("loss", _F64, "checkpoint's evaluation loss (nats; NaN for external checkpoints)"),
        Column("icl_loss", _F64, "checkpoint's in-context loss on the copy (nats; NaN for external checkpoints)"),
    ),
)
