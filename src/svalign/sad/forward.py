"""The one forward loop every stage that reads activations iterates: a named prompt set → tokens grouped by length
→ chunks of prompts → one forward pass per chunk → each layer's head inputs, the model's own scores and its
attention pattern.

* :class:`PromptSet` (:meth:`PromptSet.build`): the texts of a named prompt set, tokenised the way every stage
  tokenises them (no BOS on causal models, [CLS] … [SEP] on BERT, IOI prompts with a multi-token name dropped).
* :func:`forward_passes`: one :class:`ForwardChunk` per chunk of at most ``chunk_prompts`` prompts, in order.
* :meth:`ForwardChunk.inputs`: one layer's :class:`LayerInputs` (head inputs, scores, pattern, window, q/k-norm
  scales), read from the chunk's activation cache.

The SAD stage (:mod:`svalign.sad.run`), the SAE attribution (:mod:`svalign.sae.run`) and the explorer read-outs
(:mod:`svalign.explorer.readouts`) all read the model through this module, so they see the same tokens, the same
chunks and the same head inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from svalign.heads import HeadWeights
from svalign.mappings import check_offset_coverage
from svalign.nulls import SecondMoment
from svalign.sad.decompose import allowed_keys, augment_inputs, decompose
from svalign.sad.prompts import prompt_set
from svalign.svd import HeadSVD, ModelSVD

__all__ = [
    "ForwardChunk",
    "LayerInputs",
    "PromptBatch",
    "PromptSet",
    "check_offsets",
    "forward_passes",
    "input_moments",
    "ioi_logit_diff",
    "layer_activations",
    "layer_inputs",
    "model_scores",
    "prompt_chunks",
    "tokenize_prompts",
]


# --------------------------------------------------------------------------------------------------
# Prompts → tokens
# --------------------------------------------------------------------------------------------------


@dataclass
class PromptBatch:
    """Prompts of one token length (padding-free), with their indices in the prompt set.

    Attributes:
        tokens: ``[n, pos]`` token ids.
        prompt: ``[n]`` prompt indices.
        io_token, s_token: ``[n]`` IOI answer tokens (−1 for plain text).
    """

    tokens: torch.Tensor
    prompt: torch.Tensor
    io_token: torch.Tensor
    s_token: torch.Tensor

    def __getitem__(self, rows: slice) -> PromptBatch:
        """The prompts ``rows`` of this batch."""
        return PromptBatch(self.tokens[rows], self.prompt[rows], self.io_token[rows], self.s_token[rows])

    def __len__(self) -> int:
        return len(self.tokens)


def _single_token(tokenizer: Any, name: str, causal: bool) -> int | None:
    """The token of ``name`` (after a space on causal models), or None when it is several tokens or the tokenizer's
    unknown token (an IOI answer must be a token of its own, or logit(IO) − logit(S) means nothing)."""
    if causal:
        ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(name))
    unknown = getattr(tokenizer, "unk_token_id", None)
    return int(ids[0]) if len(ids) == 1 and (unknown is None or ids[0] != unknown) else None


def tokenize_prompts(
    tokenizer: Any, texts: list[str], causal: bool, n_ctx: int, answers: list[tuple[str, str]] | None = None
) -> tuple[list[PromptBatch], list[int]]:
    """Tokenise and group prompts by length; IOI prompts whose names are not single known tokens are dropped.

    Causal models get no BOS (recorded in provenance); BERT gets its usual [CLS] … [SEP].

    Returns:
        (batches sorted by length, kept prompt indices).

    Raises:
        ValueError: empty prompt set, a prompt of fewer than 2 tokens, no prompt left after filtering, or a prompt
            longer than the context.
    """
    if not texts:
        raise ValueError("the prompt set is empty")
    by_length: dict[int, list[tuple[int, list[int], int, int]]] = {}
    kept = []
    for index, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=not causal)["input_ids"]
        if len(ids) < 2:  # an empty or whitespace-only prompt: no pair (t, j) with a choice of keys
            raise ValueError(f"prompt {index} ({text!r}) has {len(ids)} token(s); a prompt needs at least 2")
        if len(ids) > n_ctx:
            raise ValueError(f"prompt {index} has {len(ids)} tokens, more than the model's context of {n_ctx}")
        io_token = s_token = -1
        if answers is not None:
            io_id, s_id = (_single_token(tokenizer, name, causal) for name in answers[index])
            if io_id is None or s_id is None:
                continue
            io_token, s_token = io_id, s_id
        kept.append(index)
        by_length.setdefault(len(ids), []).append((index, ids, io_token, s_token))
    if not kept:
        raise ValueError(
            "no prompt is left: this tokenizer splits every IOI prompt's names into several tokens, or does not "
            "know them"
        )
    batches = [
        PromptBatch(
            tokens=torch.tensor([r[1] for r in rows]),
            prompt=torch.tensor([r[0] for r in rows]),
            io_token=torch.tensor([r[2] for r in rows]),
            s_token=torch.tensor([r[3] for r in rows]),
        )
        for _, rows in sorted(by_length.items())
    ]
    return batches, kept


@dataclass
class PromptSet:
    """A named prompt set, tokenised for one model.

    Attributes:
        name: the set's name (:data:`svalign.sad.prompts.PROMPT_SETS`).
        texts: every prompt of the set, kept or not.
        answers: IOI (IO, S) names per prompt, else None.
        batches: the kept prompts grouped by token length (:func:`tokenize_prompts`).
        kept: indices of the kept prompts.
    """

    name: str
    texts: list[str]
    answers: list[tuple[str, str]] | None
    batches: list[PromptBatch]
    kept: list[int]

    @classmethod
    def build(
        cls,
        model: Any,
        weights: HeadWeights,
        name: str,
        params: Mapping[str, Any],
        repeated: Sequence[str] | None = None,
    ) -> PromptSet:
        """Prompt set ``name`` tokenised by ``model``'s tokenizer within its context.

        Args:
            params: what :func:`svalign.sad.prompts.prompt_set` needs (IOI: ``n_ioi_prompts``, ``prompt_seed``).
            repeated: texts of the ``repeated`` set (the dynamics stage's prompt table), else None.
        """
        texts, answers = prompt_set(name, **params, repeated=repeated)
        batches, kept = tokenize_prompts(model.tokenizer, texts, weights.causal, model.cfg.n_ctx, answers)
        return cls(name, texts, answers, batches, kept)


def check_offsets(model_svd: ModelSVD, batches: list[PromptBatch]) -> None:
    """Fail (naming ``svd.max_offset``) unless a RoPE model's offsets cover the longest prompt of ``batches``."""
    if model_svd.uses_offsets:
        longest = max(batch.tokens.shape[1] for batch in batches)
        check_offset_coverage(model_svd.max_offset, longest, "the longest prompt of this prompt set")


def prompt_chunks(batches: list[PromptBatch], chunk_prompts: int) -> Iterator[PromptBatch]:
    """Consecutive chunks of at most ``chunk_prompts`` prompts of each batch, in order."""
    for batch in batches:
        for start in range(0, len(batch), chunk_prompts):
            yield batch[start : start + chunk_prompts]


# --------------------------------------------------------------------------------------------------
# Model activations
# --------------------------------------------------------------------------------------------------


def layer_activations(model: Any, tokens: torch.Tensor, weights: HeadWeights) -> tuple[dict, torch.Tensor]:
    """One forward pass caching each layer's head input, attention pattern and the model's unscaled scores.

    Returns:
        (the cache, last-position logits ``[n, vocab]``).
    """
    rotary = weights.rotary
    if rotary is not None and rotary.max_length and tokens.shape[1] > rotary.max_length:
        raise ValueError(
            f"a prompt of {tokens.shape[1]} tokens exceeds {rotary.max_length}, the original context of this model's "
            "length-dependent RoPE (rope_type dynamic or longrope): beyond it the model changes its rotary frequencies "
            "with the length, and the decomposition is exact only within it; shorten the prompts"
        )
    names = set()
    for layer in range(weights.n_layers):
        names.add(weights.head_input_hook.format(layer=layer))
        names.add(f"blocks.{layer}.attn.hook_pattern")
        if weights.qk_norm:  # per-token 1/ρ of q/k-norm models (svalign.hf_models)
            names.update([f"blocks.{layer}.attn.hook_query_scale", f"blocks.{layer}.attn.hook_key_scale"])
        names.update(
            [f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"]
            if weights.family.scores_from_qk
            else [f"blocks.{layer}.attn.hook_attn_scores"]
        )
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names.__contains__)
    return cache, logits[:, -1]


def model_scores(cache: dict, layer: int, weights: HeadWeights) -> torch.Tensor:
    """The model's own pre-softmax scores ``[b, h, t, j]`` before the 1/√d_head scale (masked entries 0)."""
    if weights.family.scores_from_qk:
        q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"]
        return torch.einsum("bthe,bshe->bhts", q, k)
    scores = cache[f"blocks.{layer}.attn.hook_attn_scores"] * weights.attn_scale
    allowed = allowed_keys(scores.shape[-1], weights.causal, scores.device, weights.window(layer))
    return torch.where(allowed, scores, torch.zeros((), dtype=scores.dtype))  # select before arithmetic on -inf


@dataclass
class LayerInputs:
    """What the decomposition of one layer reads from a forward pass (:meth:`ForwardChunk.inputs`).

    Attributes:
        x: head inputs ``[b, pos, d_in]`` (with the bias coordinate when the SVD is augmented).
        scores: the model's unscaled scores ``[b, h, t, j]`` (:func:`model_scores`; entries outside K(t) are 0).
        pattern: the real model's attention ``[b, h, t, j]``; it fixes the firing pairs of every null draw.
        window: the layer's sliding window (K(t) = t − w < j ≤ t), or None.
        query_scale, key_scale: per-token 1/ρ_q, 1/ρ_k ``[b, h, pos]`` of q/k-norm models, else None.
    """

    x: torch.Tensor
    scores: torch.Tensor
    pattern: torch.Tensor
    window: int | None = None
    query_scale: torch.Tensor | None = None
    key_scale: torch.Tensor | None = None

    def terms(self, svd: HeadSVD, causal: bool, offsets_used: bool) -> torch.Tensor:
        """The terms a_k(t, j) ``[b, h, t, j, r]`` of ``svd`` (the layer's, or a null draw's) on these inputs."""
        scales = {"query_scale": self.query_scale, "key_scale": self.key_scale}
        return decompose(self.x, svd, causal, offsets_used, window=self.window, **scales)


def layer_inputs(cache: dict, layer: int, weights: HeadWeights, augmented: bool) -> LayerInputs:
    """One layer's :class:`LayerInputs` from :func:`layer_activations`' cache."""
    hook = f"blocks.{layer}.attn.hook_"
    scales = [cache[hook + name].float() for name in ("query_scale", "key_scale")] if weights.qk_norm else []
    return LayerInputs(
        augment_inputs(cache[weights.head_input_hook.format(layer=layer)].float(), augmented),
        model_scores(cache, layer, weights).float(),
        cache[hook + "pattern"].float(),
        weights.window(layer),
        *scales,
    )


def ioi_logit_diff(last_logits: torch.Tensor, io_token: torch.Tensor, s_token: torch.Tensor) -> list[float]:
    """logit(IO) − logit(S) of each prompt, from last-position logits ``[n, vocab]`` and answers ``[n]``."""
    rows = torch.arange(len(last_logits))
    return (last_logits[rows, io_token] - last_logits[rows, s_token]).tolist()


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


@dataclass
class ForwardChunk:
    """One forward pass over a chunk of prompts.

    Attributes:
        batch: the chunk's prompts (tokens ``[n, pos]``, prompt indices and IOI answers ``[n]``).
        last_logits: ``[n, vocab]`` logits at the last position.
        cache: the activations :func:`layer_activations` keeps; read them through :meth:`inputs`.
        weights: the model's head weights (hook names, family conventions).
        augmented: whether head inputs get the bias coordinate (the SVD is bias-augmented).
    """

    batch: PromptBatch
    last_logits: torch.Tensor
    cache: dict
    weights: HeadWeights
    augmented: bool
    layers: list[LayerInputs] | None = None

    def inputs(self, layer: int) -> LayerInputs:
        """Layer ``layer``'s head inputs, scores and pattern on this chunk."""
        if self.layers is not None:
            return self.layers[layer]
        return layer_inputs(self.cache, layer, self.weights, self.augmented)

    def head_inputs(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s head inputs ``[n, pos, d_in]`` alone (bias coordinate included when augmented)."""
        if self.layers is not None:
            return self.layers[layer].x
        return augment_inputs(self.cache[self.weights.head_input_hook.format(layer=layer)].float(), self.augmented)

    def kept(self) -> ForwardChunk:
        """This chunk with every layer's :class:`LayerInputs` computed and the rest of the cache (q, k, raw scores)
        dropped: what a consumer that reads the chunk twice keeps instead of running the model twice."""
        layers = [self.inputs(layer) for layer in range(self.weights.n_layers)]
        return ForwardChunk(self.batch, self.last_logits, {}, self.weights, self.augmented, layers)

    def ioi_logit_diff(self) -> dict[int, float]:
        """{prompt: logit(IO) − logit(S)} on a causal model's IOI prompts; empty otherwise."""
        batch = self.batch
        if not self.weights.causal or not bool((batch.io_token >= 0).all()):
            return {}
        diff = ioi_logit_diff(self.last_logits, batch.io_token, batch.s_token)
        return dict(zip(batch.prompt.tolist(), diff, strict=True))


def forward_passes(
    model: Any, weights: HeadWeights, batches: list[PromptBatch], chunk_prompts: int, augmented: bool
) -> Iterator[ForwardChunk]:
    """One :class:`ForwardChunk` per chunk of at most ``chunk_prompts`` prompts of ``batches``, in order.

    The chunk's activations live until the consumer moves on, so memory is bounded by one chunk.
    """
    for chunk in prompt_chunks(batches, chunk_prompts):
        cache, last_logits = layer_activations(model, chunk.tokens, weights)
        yield ForwardChunk(chunk, last_logits, cache, weights, augmented)


def input_moments(chunks: Iterable[ForwardChunk], n_layers: int) -> torch.Tensor:
    """Every layer's second moment E[x̃ x̃ᵀ] of the head inputs over all tokens of ``chunks`` (:func:`forward_passes`):
    ``[layer, d_in, d_in]`` float64 (:class:`svalign.nulls.SecondMoment`; the bias coordinate of augmented inputs
    included)."""
    moments = None
    for chunk in chunks:
        for layer in range(n_layers):
            x = chunk.head_inputs(layer)
            if moments is None:
                moments = SecondMoment(n_layers, x.shape[-1])
            moments.update(layer, x)
    if moments is None:
        raise ValueError("no prompt to take the head inputs' second moment over")
    return moments.matrix
