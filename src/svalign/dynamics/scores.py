"""Per-head scores of the dynamics checkpoints, the checkpoint manifest, and SAD across checkpoints.

* :func:`induction_score`, :func:`previous_token_score`: what one attention pattern says about each head;
* :func:`checkpoint_scores`: both scores of every head of every checkpoint, with its loss and in-context loss on a
  fixed evaluation batch (column data for :data:`svalign.tables.DYNAMICS_HEAD_SCORES` via :func:`head_scores_columns`);
* :func:`write_manifest`, :func:`read_manifest`: the list of checkpoints a training run wrote (JSON);
* :func:`dynamics_sad_columns`: every checkpoint's SAD summary with its scores and the tracked head marked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svalign.dynamics.config import DynamicsConfig
from svalign.dynamics.task import RepeatBatch, in_copy, repeat_batch
from svalign.dynamics.train import checkpoint_dirs, checkpoint_info
from svalign.io import write_text
from svalign.tables import DYNAMICS_SAD

__all__ = [
    "checkpoint_scores",
    "dynamics_sad_columns",
    "head_scores_columns",
    "induction_score",
    "previous_token_score",
    "read_manifest",
    "write_manifest",
]

_HEAD_SCORE_COLUMNS = ("step", "layer", "head", "induction_score", "previous_token_score", "loss", "icl_loss")


# --------------------------------------------------------------------------------------------------
# Head scores
# --------------------------------------------------------------------------------------------------


def induction_score(pattern: torch.Tensor, period: torch.Tensor | int, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Mean attention from each token of the second copy to the position right after its first occurrence.

    For a segment of length L starting at ``start``, the query at position t of the copy
    (``start + L <= t < start + 2L``) holds the token first seen at t − L; an induction head attends to the
    token after it, key t − L + 1. The score averages that attention weight over those queries and the batch.

    Args:
        pattern: attention weights ``[batch, head, query, key]`` (rows sum to 1).
        period: segment length L, an int or ``[batch]``.
        start: first position of the segment, an int or ``[batch]``.

    Returns:
        ``[head]`` scores in [0, 1] (1: a perfect induction head).
    """
    b, h, T, _ = pattern.shape
    device = pattern.device
    period = torch.as_tensor(period, device=device).expand(b)
    start = torch.as_tensor(start, device=device).expand(b)
    queries = in_copy(T, start, period)  # [b, T]
    keys = (torch.arange(T, device=device) - period.unsqueeze(1) + 1).clamp(min=0)  # [b, T]
    weights = pattern.gather(-1, keys[:, None, :, None].expand(b, h, T, 1)).squeeze(-1)  # [b, h, T]
    mask = queries.unsqueeze(1).to(pattern.dtype)
    return (weights * mask).sum((0, 2)) / mask.sum((0, 2)).clamp_min(1)


def previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position t >= 1 to t − 1.

    Args:
        pattern: attention weights ``[batch, head, query, key]``.

    Returns:
        ``[head]`` scores in [0, 1] (1: a perfect previous-token head).
    """
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))  # entries [.., t, t − 1], t >= 1


def _score_checkpoint(path: Path, step: int, batch: RepeatBatch, device: torch.device) -> dict[str, np.ndarray]:
    """Scores and losses of one checkpoint on the evaluation batch: arrays of ``L·H`` rows, by layer, head."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager", dtype=torch.float32)
    model.to(device).eval()
    with torch.no_grad():
        output = model(input_ids=batch.tokens, output_attentions=True)
        per_token = torch.nn.functional.cross_entropy(
            output.logits[:, :-1].flatten(0, 1), batch.tokens[:, 1:].flatten(), reduction="none"
        ).view(batch.tokens.shape[0], -1)  # [b, T − 1]
    mask = batch.icl_mask()
    loss, icl = float(per_token.mean()), float((per_token * mask).sum() / mask.sum())
    patterns = torch.stack(output.attentions, 0)  # [layer, b, h, q, k]
    L, _, H = patterns.shape[:3]
    flat = patterns.transpose(0, 1).flatten(1, 2)  # [b, layer·head, q, k]: one call scores every head
    return {
        "step": np.full(L * H, step),
        "layer": np.repeat(np.arange(L), H),
        "head": np.tile(np.arange(H), L),
        "induction_score": induction_score(flat, batch.period, batch.start).cpu().numpy(),
        "previous_token_score": previous_token_score(flat).cpu().numpy(),
        "loss": np.full(L * H, loss),
        "icl_loss": np.full(L * H, icl),
    }


def checkpoint_scores(
    checkpoints: Sequence[str | Path] | Mapping[int, str | Path],
    config: DynamicsConfig,
    device: torch.device | str = "cpu",
    eval_seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Induction and previous-token scores of every layer × head of every checkpoint, with its losses.

    Every checkpoint is loaded from its directory (``AutoModelForCausalLM``, eager attention so the patterns are
    returned) and run on one fixed evaluation batch ``repeat_batch(config, eval_batch_size, eval_seed, "eval")``.

    Args:
        checkpoints: checkpoint directories (or ``{step: directory}``); the step is read from each directory's
            JSON summary (:func:`~svalign.dynamics.train.checkpoint_info`).
        eval_seed: seed of the evaluation batch (default ``config.seed``).

    Returns:
        Columns ``step, layer, head, induction_score, previous_token_score, loss, icl_loss`` of
        :data:`svalign.tables.DYNAMICS_HEAD_SCORES` (without the keys ``model`` and ``seed``): rows by step, layer,
        head.
    """
    paths = list(checkpoints.values()) if isinstance(checkpoints, Mapping) else list(checkpoints)
    device = torch.device(device)
    batch = repeat_batch(config, config.eval_batch_size, config.seed if eval_seed is None else eval_seed, "eval")
    batch = batch.to(device)
    rows: dict[str, list] = {name: [] for name in _HEAD_SCORE_COLUMNS}
    infos = {Path(p): checkpoint_info(p) for p in paths}
    for path, info in sorted(infos.items(), key=lambda item: item[1]["step"]):
        # The evaluation batch must be in the checkpoint's vocabulary and context.
        trained = {k: info["config"].get(k) for k in ("vocab_size", "seq_len")}
        if trained != {k: getattr(config, k) for k in trained}:
            raise ValueError(f"{path} was trained with {trained}, but the scores are asked for {config}")
        for name, values in _score_checkpoint(path, info["step"], batch, device).items():
            rows[name].append(values)
    return {k: np.concatenate(v) for k, v in rows.items()}


def head_scores_columns(scores: Mapping[str, np.ndarray], model: str, seed: int) -> dict[str, Any]:
    """Column data for :data:`svalign.tables.DYNAMICS_HEAD_SCORES` from :func:`checkpoint_scores`."""
    n = len(scores["step"])
    return {"model": [model] * n, "seed": [seed] * n, **dict(scores)}


# --------------------------------------------------------------------------------------------------
# The checkpoint manifest
# --------------------------------------------------------------------------------------------------


def write_manifest(path: str | Path, out_dir: str | Path, config: DynamicsConfig) -> Path:
    """Write the list of scheduled checkpoints (step -> directory) atomically; fails if one is missing."""
    found = checkpoint_dirs(out_dir)
    missing = [step for step in config.schedule() if step not in found]
    if missing:
        raise RuntimeError(f"{out_dir}: checkpoints of steps {missing} are missing after training")
    manifest = {"config": config.to_dict(), "checkpoints": {str(s): str(found[s]) for s in config.schedule()}}
    return write_text(path, json.dumps(manifest, indent=1) + "\n")


def read_manifest(path: str | Path) -> dict[int, Path]:
    """Checkpoint directories by step, from :func:`write_manifest`'s file."""
    manifest = json.loads(Path(path).read_text())
    return {int(step): Path(directory) for step, directory in manifest["checkpoints"].items()}


# --------------------------------------------------------------------------------------------------
# SAD across checkpoints
# --------------------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = [
    "layer",
    "head",
    "n_pairs",
    "median_n_recon",
    "null_median_n_recon",
    "median_sparseness",
    "null_median_sparseness",
]
_TASK_SCORE_COLUMNS = ["induction_score", "previous_token_score", "loss", "icl_loss"]


def _stack_summaries(summaries: Mapping[str, Any], checkpoints: Mapping[str, Mapping[str, Any]]) -> Any:
    """One DataFrame of every checkpoint's summary rows, led by ``checkpoint``, ``series`` and ``step``."""
    import pandas as pd

    frames = []
    for name, summary in summaries.items():
        entry = checkpoints[name]
        frame = summary[_SUMMARY_COLUMNS].copy()
        frame.insert(0, "step", int(entry["step"]))
        frame.insert(0, "series", "ours" if entry.get("ours") else "external")
        frame.insert(0, "checkpoint", name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def dynamics_sad_columns(
    summaries: Mapping[str, Any],
    checkpoints: Mapping[str, Mapping[str, Any]],
    scores: Any | None,
    head: Mapping[str, int] | None,
) -> dict[str, Any]:
    """Column data for :data:`svalign.tables.DYNAMICS_SAD`.

    Args:
        summaries: checkpoint name -> its SAD summary DataFrame (:data:`svalign.tables.SAD_SUMMARY`).
        checkpoints: checkpoint name -> ``{"step", "ours", ...}`` (:func:`svalign.dynamics.config.dynamics_models`).
        scores: DataFrame of :data:`svalign.tables.DYNAMICS_HEAD_SCORES` (our series) or None.
        head: ``{"layer", "head"}`` to track, or None for the best induction score at the last checkpoint.

    Raises:
        ValueError: no head given and no scores to choose by, or the head does not exist.
    """
    table = _stack_summaries(summaries, checkpoints)
    if scores is not None:
        table = table.merge(
            scores[["step", "layer", "head", *_TASK_SCORE_COLUMNS]], on=["step", "layer", "head"], how="left"
        )
    else:
        for column in _TASK_SCORE_COLUMNS:
            table[column] = float("nan")
    if head is None:
        if scores is None:
            raise ValueError("dynamics.head is needed: there are no induction scores to choose a head by")
        last = table[table["step"] == table["step"].max()]
        best = last.loc[last["induction_score"].idxmax()]
        head = {"layer": int(best["layer"]), "head": int(best["head"])}
    table["chosen"] = (table["layer"] == head["layer"]) & (table["head"] == head["head"])
    if not table["chosen"].any():
        raise ValueError(f"dynamics.head {dict(head)} is not a head of these checkpoints")
    table = table.sort_values(["step", "layer", "head"], kind="stable")
    return {column.name: table[column.name].to_numpy() for column in DYNAMICS_SAD.columns}
