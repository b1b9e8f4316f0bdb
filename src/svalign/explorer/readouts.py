"""What each singular direction of a head reads: token read-outs of u_k and v_k, and SAD examples with their terms.

For each head's leading singular pairs (σ_k, u_k, v_k) at offset δ = 0 (the only one without RoPE):

* **context read-outs**: over every position of the explorer's prompts, the head inputs x̃_t (the normalised
  residual the head's W_Q/W_K read, bias-augmented) with the largest and the most negative projections x̃_t · u_k
  (query side) and v_k · x̃_j (key side). The term a_k(t, j) = σ_k (x̃_t · u_k)(v_k · x̃_j) is large and positive
  when both projections have the same sign, so queries at the positive pole of u_k attend to keys at the positive
  pole of v_k (and negative to negative). q/k-norm models carry the per-token 1/ρ, as in SAD.
* **embedding read-outs**: every vocabulary token's embedding, through the head input's normalisation at layer 0
  (:func:`embedding_inputs`), projected the same way. This literally describes layer 0 only; deeper heads read a
  residual stream that has moved far from the embeddings, so the context read-outs are the better description.
* **SAD examples**: each head's firing pairs with the largest attention (from ``sad_pairs``), with the relative
  terms c_k(t, j) recomputed exactly as the SAD stage computes them (:mod:`svalign.sad.decompose`); their sum is
  checked against the stored ℓ̃.

:func:`run_readouts` does all three in one pass over the prompts (:func:`svalign.sad.forward.forward_passes`, the
loop every stage that reads activations shares) and returns the columns of :data:`svalign.tables.EXPLORER_READOUTS`,
``EXPLORER_EXAMPLES`` and ``EXPLORER_TOKENS``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from svalign import tables
from svalign.explorer.columns import (
    EXAMPLE_PAIR_COLUMNS,
    POLES,
    SIDES,
    TokenText,
    concat_columns,
    context_rows,
    embedding_rows,
    example_columns,
    token_columns,
)
from svalign.heads import HeadWeights
from svalign.hf_models import TransformersModel
from svalign.io import StepTables, tensor
from svalign.sad.decompose import augment_inputs, layer_svd, relative
from svalign.sad.forward import ForwardChunk, PromptBatch, PromptSet, check_offsets, forward_passes
from svalign.svd import ModelSVD

__all__ = [
    "PromptSetInput",
    "ReadoutOptions",
    "ReadoutPass",
    "TopPositions",
    "check_contributions",
    "direction_vectors",
    "embedding_inputs",
    "embedding_readouts",
    "pairs_frame",
    "readouts_step",
    "run_readouts",
    "select_examples",
    "vocabulary",
]

log = logging.getLogger(__name__)

LTILDE_TOLERANCE = 1e-3
"""Largest |Σ_k c_k − ℓ̃| of an example relative to its Σ_k |c_k| (the float32 sums differ in rounding only)."""

_UNUSED = re.compile(r"\[unused\d+\]")
_BRIDGE_NORM_KINDS = {"llama": "rmsnorm", "gpt2": "layernorm", "gpt_neox": "layernorm"}
"""Input-norm kind of the pre-norm families read through the bridge (the others: their ``Layout.norm_kind``)."""


@dataclass(frozen=True)
class ReadoutOptions:
    """Options of rule ``explorer_readouts`` (config ``explorer``; the schema documents each).

    Attributes:
        readout_directions: leading directions k read out per head (K).
        n_tokens: positions (and vocabulary tokens) per direction, side and pole.
        context_tokens: tokens on each side of a read-out position in its ``context`` string.
        n_examples: SAD examples per head.
        examples_per_key_token: at most this many of a head's examples share a key token.
        embedding_position: the position whose learned embedding is added in the encoder's (BERT) embedding read-out.
        chunk_prompts: prompts per forward pass.
    """

    readout_directions: int = 4
    n_tokens: int = 6
    context_tokens: int = 4
    n_examples: int = 8
    examples_per_key_token: int = 2
    embedding_position: int = 1
    chunk_prompts: int = 32


# --------------------------------------------------------------------------------------------------
# Tokens and directions
# --------------------------------------------------------------------------------------------------


def direction_vectors(model_svd: ModelSVD, layer: int, k: int) -> torch.Tensor:
    """The first ``k`` left and right singular vectors of one layer's heads at offset index 0.

    Returns:
        ``[2, head, d_in, k]``: ``[0]`` = u (query side), ``[1]`` = v (key side).
    """
    svd = layer_svd(model_svd, layer)
    U = svd.basis_q @ svd.core_u[:, 0, :, :k]
    V = svd.basis_k @ svd.core_v[:, 0, :, :k]
    return torch.stack([U, V])


# --------------------------------------------------------------------------------------------------
# Embedding read-outs
# --------------------------------------------------------------------------------------------------


def _hf_module(model: Any) -> Any:
    return model.model if isinstance(model, TransformersModel) else model.original_model


def _norm_kind(weights: HeadWeights) -> str:
    layout = weights.family.layout
    return layout.norm_kind if layout is not None else _BRIDGE_NORM_KINDS[weights.architecture]


def embedding_inputs(model: Any, weights: HeadWeights, token_ids: torch.Tensor, position: int = 1) -> torch.Tensor:
    """The head input layer 0 would see for each token alone: ``[n, d_model]`` (float32).

    Encoders (BERT): the embedding module's output (word + position ``position`` + token type 0, its LayerNorm with
    gain and bias), which *is* layer 0's head input. Pre-norm decoders: the token embedding through layer 0's input
    norm without its gain (folded into W_Q/W_K), exactly the ``hook_normalized`` value at a RoPE model's first
    position; learned absolute positions (GPT-2, OPT) are left out. Decoders whose attention reads the residual
    (OLMo 2, post-LN OPT): the token embedding as is.
    """
    hf = _hf_module(model)
    with torch.no_grad():
        if weights.family.is_encoder:
            ids = token_ids[:, None]
            out = hf.base_model.embeddings(
                input_ids=ids, position_ids=torch.full_like(ids, position), token_type_ids=torch.zeros_like(ids)
            )
            return out[:, 0].float()
        x = hf.get_input_embeddings()(token_ids).float()
    if "hook_normalized" not in weights.head_input_hook:
        return x
    names = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon")
    eps = next((value for n in names if (value := getattr(hf.config, n, None)) is not None), 1e-5)
    if _norm_kind(weights) == "layernorm":
        return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def vocabulary(tokenizer: Any, n_embeddings: int) -> torch.Tensor:
    """Token ids an embedding read-out ranks: the tokenizer's vocabulary (and embedding rows) without special tokens
    and BERT's never-trained ``[unusedN]`` placeholders."""
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(min(len(tokenizer), n_embeddings)) if i not in special]
    names = tokenizer.convert_ids_to_tokens(ids)
    return torch.tensor([i for i, name in zip(ids, names, strict=True) if not _UNUSED.fullmatch(str(name))])


def embedding_readouts(x: torch.Tensor, model_svd: ModelSVD, k: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` rows of ``x`` with the largest and most negative projections on each head's u_k and v_k.

    Args:
        x: ``[V, d_in]`` embedding inputs (:func:`embedding_inputs`, bias-augmented when the SVD is).

    Returns:
        values and row indices ``[layer, head, k, side, pole, n]`` (pole 1 holds −projection).
    """
    values, rows = [], []
    for layer in range(model_svd.svd.S.shape[0]):
        projection = torch.einsum("vd,shdk->hksv", x, direction_vectors(model_svd, layer, k))  # [H, K, 2, V]
        top = torch.stack([projection, -projection], 3).topk(min(n, x.shape[0]), -1)
        values.append(top.values)
        rows.append(top.indices)
    return torch.stack(values), torch.stack(rows)


class TopPositions:
    """Running top-``n`` prompt positions per (layer, head, direction, side, pole), over chunks of prompts.

    Positions get global indices in the order they are added (:meth:`add`); :attr:`refs` maps them back to
    ``(prompt set index, prompt, position)``.
    """

    def __init__(self, n_layers: int, n_heads: int, k: int, n: int) -> None:
        shape = (n_layers, n_heads, k, len(SIDES), len(POLES), n)
        self.values = torch.full(shape, -torch.inf)
        self.index = torch.full(shape, -1, dtype=torch.long)
        self._refs: list[np.ndarray] = []
        self._count = 0

    def add(self, prompt_set: int, prompts: torch.Tensor, n_pos: int) -> int:
        """Register the positions of a chunk ``[b, n_pos]`` (row-major); returns the global index of the first."""
        grid = np.stack(np.meshgrid(prompts.numpy(), np.arange(n_pos), indexing="ij"), -1).reshape(-1, 2)
        self._refs.append(np.column_stack([np.full(len(grid), prompt_set), grid]))
        first, self._count = self._count, self._count + len(grid)
        return first

    def update(self, layer: int, projection: torch.Tensor, first: int) -> None:
        """Merge one chunk's projections ``[side, head, k, positions]`` (positions from global index ``first``)."""
        candidates = torch.stack([projection, -projection], -2).permute(1, 2, 0, 3, 4)  # [H, K, side, pole, N]
        index = torch.arange(first, first + projection.shape[-1]).expand_as(candidates)
        values = torch.cat([self.values[layer], candidates], -1)
        top = values.topk(self.values.shape[-1], -1)
        self.values[layer] = top.values
        self.index[layer] = torch.cat([self.index[layer], index], -1).gather(-1, top.indices)

    @property
    def refs(self) -> np.ndarray:
        """``[positions, 3]``: prompt set index, prompt, position of every global index."""
        return np.concatenate(self._refs) if self._refs else np.zeros((0, 3), dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# SAD examples
# --------------------------------------------------------------------------------------------------


def select_examples(pairs: pd.DataFrame, key_token: np.ndarray, n: int, per_key_token: int) -> pd.DataFrame:
    """Each head's ``n`` firing pairs with the largest attention (ties: larger ℓ̃), at most ``per_key_token`` with
    the same key token.

    Args:
        pairs: ``sad_pairs`` rows (:data:`EXAMPLE_PAIR_COLUMNS` and ``prompt_set``) of every prompt set.
        key_token: ``[rows]`` token id at each pair's key position.

    Returns:
        the chosen rows sorted by (layer, head, example), with columns ``key_token_id`` and ``example``.
    """
    frame = pairs.assign(key_token_id=key_token).sort_values(
        ["layer", "head", "attention", "ltilde"], ascending=[True, True, False, False], kind="stable"
    )
    frame = frame[frame.groupby(["layer", "head", "key_token_id"]).cumcount() < per_key_token]
    frame = frame[frame.groupby(["layer", "head"]).cumcount() < n]
    return frame.assign(example=frame.groupby(["layer", "head"]).cumcount()).reset_index(drop=True)


def _positive_median(values: np.ndarray) -> np.ndarray:
    """Row medians ``[rows]`` of ``[rows, draws]`` over the entries > 0 (N_recon −1: ℓ̃ ≤ 0), NaN where none."""
    masked = np.where(values > 0, values.astype(np.float64), np.nan)
    out = np.full(len(masked), np.nan)
    some = ~np.isnan(masked).all(-1)
    out[some] = np.nanmedian(masked[some], axis=-1)
    return out


def check_contributions(contributions: np.ndarray, ltilde: np.ndarray) -> float:
    """Raise unless every example's Σ_k c_k equals its stored ℓ̃; returns the worst relative error.

    The error is relative to Σ_k |c_k|, the scale of the float32 sum.
    """
    if not len(ltilde):
        return 0.0
    error = np.abs(contributions.sum(-1) - ltilde) / np.maximum(np.abs(contributions).sum(-1), 1e-12)
    worst = float(error.max())
    if not worst <= LTILDE_TOLERANCE:
        raise ArithmeticError(
            f"the recomputed relative terms sum to the stored ℓ̃ only to {worst:.2e} (relative): sad_pairs was made "
            "from other weights, SVD or prompts than this job reads: rebuild both with "
            "`snakemake --cores 1 --forcerun sad explorer_readouts`"
        )
    return worst


def pairs_frame(table: Any, prompt_set: str) -> pd.DataFrame:
    """The :data:`EXAMPLE_PAIR_COLUMNS` of a ``sad_pairs`` table as a DataFrame, null columns as their medians over
    the draws (N_recon over the draws with ℓ̃ > 0), plus ``prompt_set``."""
    draws = [c for c in EXAMPLE_PAIR_COLUMNS if "null_" in c]
    frame = table.select([c for c in EXAMPLE_PAIR_COLUMNS if c not in draws]).to_pandas()
    frame["null_n_recon"] = _positive_median(tensor(table, "null_n_recon"))
    for column in draws[1:]:  # S of each null (NaN when the run skipped it)
        frame[column] = np.median(tensor(table, column), axis=-1)
    return frame.assign(prompt_set=prompt_set)


# --------------------------------------------------------------------------------------------------
# One pass over the prompts
# --------------------------------------------------------------------------------------------------


@dataclass
class PromptSetInput:
    """One prompt set of the explorer: its tokenised prompts (as the SAD stage batches them) and its SAD pairs."""

    batches: list[PromptBatch]
    pairs: pd.DataFrame

    @classmethod
    def read(
        cls, model: Any, weights: HeadWeights, model_svd: ModelSVD, name: str, params: Mapping, pairs: Any
    ) -> PromptSetInput:
        """Tokenise prompt set ``name`` (``params``: what :func:`svalign.sad.prompts.prompt_set` needs) as the SAD
        stage does, and take its ``sad_pairs`` table ``pairs`` (pyarrow)."""
        prompts = PromptSet.build(model, weights, name, params)
        check_offsets(model_svd, prompts.batches)
        return cls(prompts.batches, pairs_frame(pairs, name))


def _prompt_tokens(batches: list[PromptBatch]) -> dict[int, list[int]]:
    return {int(p): row.tolist() for b in batches for p, row in zip(b.prompt, b.tokens, strict=True)}


def _key_tokens(pairs: pd.DataFrame, tokens: dict[int, list[int]]) -> np.ndarray:
    """``[rows]`` token id at each pair's key position, vectorised through one flat token array."""
    prompts = sorted(tokens)
    starts = dict(zip(prompts, np.cumsum([0] + [len(tokens[p]) for p in prompts[:-1]]), strict=True))
    flat = np.concatenate([np.asarray(tokens[p]) for p in prompts])
    return flat[pairs["prompt"].map(starts).to_numpy() + pairs["j"].to_numpy()]


@dataclass
class ReadoutPass:
    """What :func:`run_readouts` gathers over the forward passes of every prompt set.

    Attributes:
        top: the running top positions of every direction, side and pole.
        examples: the chosen SAD examples (:func:`select_examples`, with ``set_index``: the prompt set's index).
        contributions: ``[examples, r]`` each example's relative terms c_k, filled as its prompt passes.
    """

    top: TopPositions
    examples: pd.DataFrame
    contributions: np.ndarray

    def add(self, chunk: ForwardChunk, model_svd: ModelSVD, set_index: int) -> None:
        """One forward pass: every layer's projections into :attr:`top`, its examples' terms into
        :attr:`contributions`."""
        tokens, prompts, weights = chunk.batch.tokens, chunk.batch.prompt, chunk.weights
        first = self.top.add(set_index, prompts, tokens.shape[1])
        examples, k = self.examples, self.top.values.shape[2]
        in_set = (examples["set_index"] == set_index).to_numpy()
        in_chunk = in_set & examples["prompt"].isin(prompts.tolist()).to_numpy()
        row_of_prompt = {int(p): i for i, p in enumerate(prompts)}
        for layer in range(weights.n_layers):
            inputs = chunk.inputs(layer)
            projection = torch.einsum("bpd,shdk->shkbp", inputs.x, direction_vectors(model_svd, layer, k))
            for side, scale in enumerate((inputs.query_scale, inputs.key_scale)):
                if scale is not None:  # [b, h, pos] -> [h, 1, b, pos]
                    projection[side] *= scale.permute(1, 0, 2).unsqueeze(1)
            self.top.update(layer, projection.flatten(-2), first)
            rows = np.flatnonzero(in_chunk & (examples["layer"] == layer).to_numpy())
            if rows.size:
                terms = inputs.terms(layer_svd(model_svd, layer), weights.causal, model_svd.uses_offsets)
                c = relative(terms, weights.causal, inputs.window)
                chosen = examples.iloc[rows]
                batch = torch.tensor([row_of_prompt[int(p)] for p in chosen["prompt"]])
                index = (batch, *(torch.tensor(chosen[n].to_numpy()) for n in ("head", "t", "j")))
                self.contributions[rows] = c[index].numpy()


def run_readouts(
    model: Any, weights: HeadWeights, model_svd: ModelSVD, sets: Mapping[str, PromptSetInput], options: ReadoutOptions
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Context and embedding read-outs and SAD examples of every head, in one pass over the prompt sets.

    Returns:
        column data (without the ``model``/``variant`` keys) of ``EXPLORER_READOUTS``, ``EXPLORER_EXAMPLES`` and
        ``EXPLORER_TOKENS``.
    """
    names = list(sets)
    tokens = {name: _prompt_tokens(sets[name].batches) for name in names}
    pairs = pd.concat([sets[n].pairs.assign(set_index=i) for i, n in enumerate(names)], ignore_index=True)
    keys = np.concatenate([_key_tokens(sets[n].pairs, tokens[n]) for n in names])
    examples = select_examples(pairs, keys, options.n_examples, options.examples_per_key_token)
    k = min(options.readout_directions, model_svd.svd.S.shape[-1])
    gathered = ReadoutPass(
        TopPositions(weights.n_layers, weights.n_heads, k, options.n_tokens),
        examples,
        np.zeros((len(examples), model_svd.svd.S.shape[-1]), dtype=np.float32),
    )
    for set_index, name in enumerate(names):
        for chunk in forward_passes(model, weights, sets[name].batches, options.chunk_prompts, model_svd.augmented):
            gathered.add(chunk, model_svd, set_index)
    worst = check_contributions(gathered.contributions, examples["ltilde"].to_numpy())
    log.info("%d examples; their terms sum to the stored ℓ̃ to %.1e", len(examples), worst)
    tokenizer = model.tokenizer
    vocab = vocabulary(tokenizer, _hf_module(model).get_input_embeddings().num_embeddings)
    x = augment_inputs(embedding_inputs(model, weights, vocab, options.embedding_position), model_svd.augmented)
    emb_values, emb_rows = embedding_readouts(x, model_svd, k, options.n_tokens)
    text = TokenText(tokenizer, tokens, names)
    top = gathered.top
    readouts = concat_columns(
        context_rows(text, top.values, top.index, top.refs, options.context_tokens),
        embedding_rows(text, emb_values, vocab[emb_rows]),
    )
    example_table = example_columns(text, examples, gathered.contributions, model_svd.uses_offsets)
    return readouts, example_table, token_columns(text)


def readouts_step(
    model: Any,
    weights: HeadWeights,
    model_svd: ModelSVD,
    sets: Mapping[str, PromptSetInput],
    options: ReadoutOptions,
    keys: Mapping[str, str],
    record: Mapping[str, Any],
) -> StepTables:
    """:func:`run_readouts` as the tables ``readouts``, ``examples`` and ``tokens`` of one model variant (``keys``:
    ``model``, ``variant``), for :func:`svalign.io.write_step`."""
    made = run_readouts(model, weights, model_svd, sets, options)
    schemas = (tables.EXPLORER_READOUTS, tables.EXPLORER_EXAMPLES, tables.EXPLORER_TOKENS)
    out = {}
    for name, schema, columns in zip(("readouts", "examples", "tokens"), schemas, made, strict=True):
        n = len(next(iter(columns.values())))
        out[name] = (schema, {**{key: [value] * n for key, value in keys.items()}, **columns})
    return StepTables(out, dict(record))
