"""One model variant through the real-model stages: weights → SVD → SAD, as steps that rules call.

Rules ``extract_weights``, ``svd`` and ``sad`` each call one step in their own process; :func:`checkpoint_chain`
calls all three for one training checkpoint, so rule ``dynamics_checkpoint`` makes a checkpoint one process (and
one cluster submission) instead of three, and rule ``dynamics_series`` runs a whole series of small checkpoints in
one process — for a 2-layer model the import and boot cost of a job is most of its time. Each step returns the
tables it made (column mappings for schemas of :mod:`svalign.tables`) and their provenance record; the caller
writes them with :func:`svalign.io.write_table`. A step reads its inputs from the Parquet tables of the step
before, so a chained run computes on exactly the bytes that separate jobs would.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from svalign import io, models, svd, tables
from svalign.io import PathLike, StepTables, write_step
from svalign.runtime import resolve_device
from svalign.sad import run
from svalign.sad.config import SADConfig
from svalign.sad.forward import PromptSet

__all__ = [
    "CHECKPOINT_OUTPUTS",
    "chain_options",
    "checkpoint_chain",
    "read_svd",
    "read_weights",
    "repeated_texts",
    "sad_step",
    "svd_step",
    "weights_step",
]

log = logging.getLogger(__name__)


def weights_step(
    model: Mapping[str, Any], variant: str, seed: int, smollm2_dir: PathLike | None = None
) -> tuple[StepTables, Any]:
    """Boot one model variant and extract every head's W_Q/W_K: table ``weights`` (HEAD_WEIGHTS).

    Returns the step's tables and the booted bridge (a chained run reuses it for SAD instead of booting again).
    """
    bridge, model_dir = models.load_model(dict(model), variant, seed, smollm2_dir)
    weights = models.extract_head_weights(bridge)
    models.check_finite(bridge, weights, f"{model['name']} ({variant})")
    log.info("%s (%s): %d layers x %d heads", model["name"], variant, weights.n_layers, weights.n_heads)
    record = io.provenance(
        "extract_weights",
        {**model, "variant": variant, "model_dir": str(model_dir), "processing": weights.processing},
        seed=seed if variant == "random" else None,
    )
    columns = models.head_weights_table(weights, model["name"], variant)
    return StepTables({"weights": (tables.HEAD_WEIGHTS, columns)}, record), bridge


def read_weights(path: PathLike) -> models.HeadWeights:
    """The head weights a weights step wrote."""
    return models.read_head_weights(io.read_table(path, tables.HEAD_WEIGHTS, min_rows=1))


def svd_step(
    weights: models.HeadWeights, model: str, variant: str, config: Mapping[str, Any], device: str
) -> StepTables:
    """Batched factored SVD of every head (per RoPE offset): tables ``svd`` (HEAD_SVD), ``bases`` (HEAD_SVD_BASES).

    ``config`` is the ``svd`` config section (max_offset, precision, method, max_recon_error).
    """
    method = config.get("method", svd.DEFAULT_METHOD)
    result = svd.model_svd(weights, config["max_offset"], resolve_device(device), config["precision"], method)
    svd.check_reconstruction(result, config["max_recon_error"])
    svd_columns, bases_columns = svd.svd_tables(result, model, variant)
    record = io.provenance("svd", {"model": model, "variant": variant, **config})
    return StepTables({"svd": (tables.HEAD_SVD, svd_columns), "bases": (tables.HEAD_SVD_BASES, bases_columns)}, record)


def read_svd(svd_path: PathLike, bases_path: PathLike) -> svd.ModelSVD:
    """The model SVD an SVD step wrote."""
    return svd.read_model_svd(
        io.read_table(svd_path, tables.HEAD_SVD, min_rows=1),
        io.read_table(bases_path, tables.HEAD_SVD_BASES, min_rows=1),
    )


def sad_step(
    bridge: Any,
    weights: models.HeadWeights,
    model_svd: svd.ModelSVD,
    keys: Mapping[str, str],
    config: SADConfig,
    prompt_params: Mapping[str, Any],
    repeated: Sequence[str] | None = None,
) -> StepTables:
    """SAD of every head on one prompt set: tables ``pairs``, ``summary``, ``prompts`` (SAD_*).

    Args:
        keys: ``{"model", "variant", "prompt_set"}``.
        config: the SAD options.
        prompt_params: what the prompt set needs (IOI: ``n_ioi_prompts``, ``prompt_seed``; else nothing).
        repeated: texts of the ``repeated`` prompt set (the dynamics stage's table), else None.
    """
    prompts = PromptSet.build(bridge, weights, keys["prompt_set"], prompt_params, repeated)
    pairs, diagnostics = run.run_sad(bridge, weights, model_svd, prompts.batches, config)  # checks the offsets first
    record = io.provenance(
        "sad",
        {
            **keys,
            **config.to_dict(),
            **prompt_params,
            "prompts_kept": len(prompts.kept),
            "prepend_bos": False,
            **diagnostics,
        },
        seed=config.null_seed,
    )
    rank = model_svd.svd.S.shape[-1]
    prompt_columns = run.prompts_table(prompts.texts, prompts.answers, prompts.batches, pairs["logit_diff"], dict(keys))
    made = {
        "pairs": (tables.SAD_PAIRS, run.pairs_table(pairs, dict(keys))),
        "summary": (tables.SAD_SUMMARY, run.summarize(pairs, rank, dict(keys))),
        "prompts": (tables.SAD_PROMPTS, prompt_columns),
    }
    return StepTables(made, record, row_groups_by={"pairs": "layer"})


def repeated_texts(path: PathLike | None) -> list[str] | None:
    """Texts of the dynamics stage's repeated-segment prompt table, in order (None without a table)."""
    if path is None:
        return None
    table: pa.Table = io.read_table(Path(path), tables.DYNAMICS_PROMPTS)
    return table.column("text").to_pylist()


CHECKPOINT_OUTPUTS = ("weights", "svd", "bases", "pairs", "summary", "prompts")
"""The tables :func:`checkpoint_chain` writes for one checkpoint (the outputs of rules extract_weights, svd, sad)."""


def checkpoint_chain(
    model: Mapping[str, Any],
    paths: Mapping[str, PathLike],
    *,
    seed: int,
    svd_config: Mapping[str, Any],
    device: str,
    prompt_set: str,
    sad_config: SADConfig,
    prompt_params: Mapping[str, Any],
    repeated: Sequence[str] | None = None,
) -> None:
    """One training checkpoint (variant ``trained``: a checkpoint is its own random-init control) through weights →
    SVD → SAD, writing each step's tables to ``paths`` (keys :data:`CHECKPOINT_OUTPUTS`) and reading them back
    for the next step, with the model booted once.
    """
    variant = "trained"
    step, bridge = weights_step(model, variant, seed)
    write_step(step, paths)
    weights = read_weights(paths["weights"])
    write_step(svd_step(weights, model["name"], variant, svd_config, device), paths)
    model_svd = read_svd(paths["svd"], paths["bases"])
    keys = {"model": model["name"], "variant": variant, "prompt_set": prompt_set}
    write_step(sad_step(bridge, weights, model_svd, keys, sad_config, prompt_params, repeated), paths)


def chain_options(params: Any) -> dict[str, Any]:
    """:func:`checkpoint_chain`'s options from the params of rule dynamics_checkpoint or dynamics_series (fields
    ``seed``, ``svd``, ``device``, ``prompt_set``, ``sad``, ``prompts``)."""
    return {
        "seed": params.seed,
        "svd_config": params.svd,
        "device": params.device,
        "prompt_set": params.prompt_set,
        "sad_config": SADConfig.from_mapping(params.sad),
        "prompt_params": params.prompts,
    }
