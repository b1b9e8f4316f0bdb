"""The repeated-segment task of the dynamics stage: batches, the word-level tokenizer, losses and SAD prompts.

The paper follows one head of Pythia-160M across its training checkpoints. Offline we train our own small model of
the same architecture on a task where two known head types form, with a visible phase change in the in-context loss:

* every sequence holds a random segment followed immediately by a copy of itself, at a random place and with a
  random length, among filler tokens. Predicting the copy needs an *induction head* (attend to the token after
  the earlier occurrence of the current token and copy it), which reads what a *previous-token head* of an
  earlier layer wrote. Segment length and position vary, so no purely positional head solves the task;
* each token repeats the one two positions back with probability ``aba_prob`` ("A B A"; everywhere, the copy
  excepted, which repeats its segment). This skip-bigram makes a previous-token head useful on its own, as n-gram
  statistics do in natural text. Without it, small models on this task sit for thousands of steps on an
  "in-context unigram" plateau before any induction head appears (measured: no induction head in 4000 steps for
  GPT-2, Llama and GPT-NeoX shapes); with it the previous-token head forms first and the induction head follows
  within a few hundred steps.

Batches are a pure function of ``(seed, purpose, step)`` (:func:`repeat_batch`), which makes resuming exact. The
tokenizer is word-level over ``t0 … t{V−1}`` (plus ``<unk>``, ``<pad>``, ``<bos>``): the text ``"t12 t5 t77"`` is one
token per word, so prompts for the SAD stage are plain texts (:func:`prompts_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from svalign.dynamics.config import N_RESERVED, RESERVED_TOKENS, DynamicsConfig
from svalign.runtime import derive_seed

__all__ = [
    "RepeatBatch",
    "build_tokenizer",
    "in_copy",
    "prompts_columns",
    "repeat_batch",
    "sad_prompts",
    "sequence_losses",
    "tokens_to_texts",
]


@dataclass
class RepeatBatch:
    """Sequences of filler tokens holding one segment and its immediate copy.

    Positions ``[start, start + L)`` hold a segment and ``[start + L, start + 2L)`` its copy (L = ``period``); the
    other positions are filler (see :func:`repeat_batch`).

    Attributes:
        tokens: ``[batch, seq]`` model token ids (ordinary tokens only, ids ≥ 3).
        start: ``[batch]`` first position of the segment.
        period: ``[batch]`` segment length L.
    """

    tokens: torch.Tensor
    start: torch.Tensor
    period: torch.Tensor

    def to(self, device: torch.device | str) -> RepeatBatch:
        return RepeatBatch(self.tokens.to(device), self.start.to(device), self.period.to(device))

    def in_copy(self) -> torch.Tensor:
        """``[batch, seq]`` True at the positions of the copy: the queries of the induction score."""
        return in_copy(self.tokens.shape[1], self.start, self.period)

    def icl_mask(self) -> torch.Tensor:
        """``[batch, seq − 1]`` True where the next token is predictable from context (the in-context loss).

        The query at position q predicts token q + 1. That token is a copy, and the token at q occurred before
        (so an induction head can find what followed it), exactly when q and q + 1 both lie in the copy.
        """
        copy = self.in_copy()
        return copy[:, :-1] & copy[:, 1:]


def in_copy(n_pos: int, start: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """``[batch, n_pos]`` True at the copy's positions ``[start + period, start + 2·period)``.

    ``start`` and ``period`` are ``[batch]``.
    """
    position = torch.arange(n_pos, device=start.device)
    first = (start + period).unsqueeze(1)  # [b, 1]
    return (position >= first) & (position < first + period.unsqueeze(1))


def repeat_batch(config: DynamicsConfig, n: int, seed: int, purpose: str, step: int = 0) -> RepeatBatch:
    """A batch that is a pure function of ``(seed, purpose, step)`` (generated on the CPU, any device later).

    Training draws ``repeat_batch(config, batch_size, config.seed, "train", step)`` for update ``step``, so a
    resumed run sees exactly the batches of an uninterrupted one without saving any RNG state.

    Filler: uniform tokens, each replaced with probability ``aba_prob`` by the token two positions back (chains
    allowed: A B A B …). Then a segment length L ~ U[min_period, max_period] and a start ~ U[0, T − 2L] are drawn
    and positions ``[start + L, start + 2L)`` are overwritten with a copy of ``[start, start + L)``.

    Args:
        n: number of sequences.
        purpose: the stream (``train``, ``eval``, ``sad``); streams never overlap.
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, f"dynamics/{purpose}/{step}"))
    T = config.seq_len
    fresh = torch.randint(config.vocab_size, (n, T), generator=generator) + N_RESERVED
    echo = torch.rand(n, T, generator=generator) < config.aba_prob  # x_t = x_{t−2}
    echo[:, :2] = False
    # Resolve chains without a loop over positions: within each parity class, x_t is the fresh token of the last
    # position at or before t that did not echo (a running maximum of "fresh" positions).
    position = torch.arange(T).expand(n, T)
    last_fresh = torch.where(echo, torch.full_like(position, -1), position)
    source = torch.empty_like(position)
    for parity in (0, 1):
        source[:, parity::2] = last_fresh[:, parity::2].cummax(dim=1).values
    tokens = fresh.gather(1, source)
    period = torch.randint(config.min_period, config.max_period + 1, (n,), generator=generator)
    # start uniform in [0, T − 2L]: floor(u · (T − 2L + 1)) with u ∈ [0, 1) stays in range for every row.
    start = (torch.rand(n, generator=generator, dtype=torch.float64) * (T - 2 * period + 1)).floor().long()
    copy = in_copy(T, start, period)
    tokens = tokens.gather(1, torch.where(copy, position - period.unsqueeze(1), position))  # the copy reads [start, …)
    return RepeatBatch(tokens, start, period)


def tokens_to_texts(tokens: torch.Tensor) -> list[str]:
    """``[batch, seq]`` model ids of ordinary tokens → texts ``"t12 t5 …"`` (what the tokenizer maps back)."""
    if (tokens < N_RESERVED).any():
        raise ValueError("tokens_to_texts: special tokens have no text form here")
    return [" ".join(f"t{int(i) - N_RESERVED}" for i in row) for row in tokens]


def sad_prompts(config: DynamicsConfig, n: int = 32, seed: int = 0) -> list[str]:
    """Texts for the SAD stage: ``n`` sequences of the training distribution (one repeated segment each).

    They come from their own stream (``purpose="sad"``); ``repeat_batch(config, n, seed, "sad")`` returns the
    same sequences with each one's segment ``start`` and ``period``. Each text is ``seq_len`` words, one token per
    word under the checkpoints' tokenizer (no BOS, as the SAD stage tokenises causal models).
    """
    return tokens_to_texts(repeat_batch(config, n, seed, "sad").tokens)


def prompts_columns(config: DynamicsConfig, n: int, seed: int) -> dict[str, Any]:
    """Column data for :data:`svalign.tables.DYNAMICS_PROMPTS`: the :func:`sad_prompts` texts, in order, with each
    sequence's segment ``start`` and ``period`` (``n`` rows)."""
    batch = repeat_batch(config, n, seed, "sad")
    return {
        "prompt": np.arange(n, dtype=np.int64),
        "text": tokens_to_texts(batch.tokens),
        "start": batch.start.numpy(),
        "period": batch.period.numpy(),
    }


def build_tokenizer(config: DynamicsConfig) -> Any:
    """Word-level ``PreTrainedTokenizerFast``: ids 0–2 special, ``t{i}`` → i + 3, split on whitespace."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(RESERVED_TOKENS)}
    vocab.update({f"t{i}": i + N_RESERVED for i in range(config.vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<bos>",
        model_max_length=config.seq_len,
    )


def sequence_losses(model: Any, batch: RepeatBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy over all positions, and over the in-context positions only.

    Returns:
        ``(loss, icl_loss)``, scalars (nats). The random parts are unpredictable (loss ≥ ln V there), so ``loss``
        cannot go below about ``ln V · (1 − fraction of predictable tokens)``; ``icl_loss`` can go to 0.
    """
    logits = model(input_ids=batch.tokens).logits  # [b, T, V']
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch.tokens[:, 1:].flatten(), reduction="none"
    ).view(batch.tokens.shape[0], -1)  # [b, T − 1]
    mask = batch.icl_mask()
    return per_token.mean(), (per_token * mask).sum() / mask.sum().clamp_min(1)
