"""The explorer read-outs as table columns: token strings decoded once (:class:`TokenText`), and the rows of the
context and embedding read-outs, the SAD examples and the prompt tokens (:data:`svalign.tables.EXPLORER_READOUTS`,
``EXPLORER_EXAMPLES``, ``EXPLORER_TOKENS``) built from what :mod:`svalign.explorer.readouts` computes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "EXAMPLE_PAIR_COLUMNS",
    "POLES",
    "SIDES",
    "TokenText",
    "concat_columns",
    "context_rows",
    "context_string",
    "embedding_rows",
    "example_columns",
    "token_columns",
]

SIDES = ("query", "key")
POLES = ("high", "low")
_POLE_SIGN = np.array([1.0, -1.0])  # pole 0 ranks the projection, pole 1 its negative
EXAMPLE_PAIR_COLUMNS = (
    "layer",
    "head",
    "prompt",
    "t",
    "j",
    "attention",
    "ltilde",
    "n_recon",
    "sparseness",
    "top_rank",
    "null_n_recon",
    "null_sparseness",
    "subspace_null_sparseness",
    "covariance_null_sparseness",
)
"""The ``sad_pairs`` columns the examples read."""


def _shown(token: str) -> str:
    """A token for a one-line context: whitespace-only tokens made visible."""
    return token.strip() or token.replace("\n", "↵").replace(" ", "␣").replace("\t", "⇥")


def context_string(tokenizer: Any, ids: list[int], position: int, width: int) -> str:
    """``left ⟦token⟧ right`` with ``width`` tokens on each side, the sides detokenised by the tokenizer."""
    left = tokenizer.decode(ids[max(0, position - width) : position]).strip()
    right = tokenizer.decode(ids[position + 1 : position + 1 + width]).strip()
    return f"{left} ⟦{_shown(tokenizer.decode([ids[position]]))}⟧ {right}".strip()


def _grid(values: torch.Tensor) -> dict[str, np.ndarray]:
    """Flat key columns and values of ``[layer, head, k, side, pole, n]`` read-outs."""
    index = np.indices(values.shape).reshape(values.dim(), -1)
    return {
        "layer": index[0],
        "head": index[1],
        "rank": index[2],
        "side": np.asarray(SIDES)[index[3]],
        "pole": np.asarray(POLES)[index[4]],
        "order": index[5],
        "value": (values.numpy() * _POLE_SIGN[:, None]).ravel().astype(np.float32),  # the signed projection
    }


def concat_columns(*parts: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([np.asarray(part[name]) for part in parts]) for name in parts[0]}


class TokenText:
    """Token strings of the explorer's prompts and vocabulary, each id decoded once and cached.

    Attributes:
        tokenizer: the model's tokenizer.
        tokens: prompt set name → {prompt: token ids}.
        names: the prompt sets in order (a prompt set index names ``names[index]``).
    """

    def __init__(self, tokenizer: Any, tokens: dict[str, dict[int, list[int]]], names: list[str]) -> None:
        self.tokenizer, self.tokens, self.names = tokenizer, tokens, names
        self._decoded: dict[int, str] = {}

    def token(self, token_id: int) -> str:
        if token_id not in self._decoded:
            self._decoded[token_id] = self.tokenizer.decode([int(token_id)])
        return self._decoded[token_id]

    def prompt_ids(self, set_index: int, prompt: int) -> list[int]:
        """Token ids of prompt ``prompt`` of prompt set ``set_index``."""
        return self.tokens[self.names[set_index]][prompt]


def context_rows(text: TokenText, values: torch.Tensor, index: torch.Tensor, refs: np.ndarray, width: int) -> dict:
    """Rows of the context read-outs (:class:`TopPositions`; positions never filled, index −1, are dropped)."""
    flat = index.numpy().ravel()
    keep = flat >= 0
    rows = {name: column[keep] for name, column in _grid(values).items()}
    ref = refs[flat[keep]]
    ids = [text.prompt_ids(s, p) for s, p in ref[:, :2]]
    contexts = {}
    for key, prompt_ids in zip(map(tuple, ref), ids, strict=True):
        if key not in contexts:
            contexts[key] = context_string(text.tokenizer, prompt_ids, int(key[2]), width)
    token_ids = np.array([prompt_ids[pos] for prompt_ids, pos in zip(ids, ref[:, 2], strict=True)], dtype=np.int64)
    return {
        **rows,
        "source": np.full(len(ref), "context", dtype=object),
        "token": np.array([text.token(i) for i in token_ids], dtype=object),
        "token_id": token_ids,
        "prompt_set": np.array([text.names[s] for s in ref[:, 0]], dtype=object),
        "prompt": ref[:, 1].astype(np.int64),
        "position": ref[:, 2].astype(np.int64),
        "context": np.array([contexts[key] for key in map(tuple, ref)], dtype=object),
    }


def embedding_rows(text: TokenText, values: torch.Tensor, token_ids: torch.Tensor) -> dict:
    """Rows of the embedding read-outs (:func:`embedding_readouts`)."""
    rows = _grid(values)
    ids = token_ids.numpy().ravel().astype(np.int64)
    n = len(ids)
    return {
        **rows,
        "source": np.full(n, "embedding", dtype=object),
        "token": np.array([text.token(i) for i in ids], dtype=object),
        "token_id": ids,
        "prompt_set": np.full(n, "", dtype=object),
        "prompt": np.full(n, -1, dtype=np.int64),
        "position": np.full(n, -1, dtype=np.int64),
        "context": np.full(n, "", dtype=object),
    }


def example_columns(text: TokenText, examples: pd.DataFrame, contributions: np.ndarray, uses_offsets: bool) -> dict:
    """Columns of the SAD examples (without model/variant)."""
    at = [text.prompt_ids(s, p) for s, p in zip(examples["set_index"], examples["prompt"], strict=True)]
    t, j = examples["t"].to_numpy(), examples["j"].to_numpy()
    columns = {name: examples[name].to_numpy() for name in EXAMPLE_PAIR_COLUMNS}
    return {
        **columns,
        "example": examples["example"].to_numpy(),
        "prompt_set": [text.names[s] for s in examples["set_index"]],
        "offset": t - j if uses_offsets else np.zeros_like(t),
        "query_token": [text.token(ids[q]) for ids, q in zip(at, t, strict=True)],
        "key_token": [text.token(ids[k]) for ids, k in zip(at, j, strict=True)],
        "contributions": contributions,
    }


def token_columns(text: TokenText) -> dict:
    """Columns of the prompt tokens (without model/variant), by prompt set and prompt."""
    rows = [(name, p, ids) for name in text.names for p, ids in sorted(text.tokens[name].items())]
    return {
        "prompt_set": [name for name, _, _ in rows],
        "prompt": [p for _, p, _ in rows],
        "tokens": [[text.token(i) for i in ids] for _, _, ids in rows],
        "token_ids": [ids for _, _, ids in rows],
    }
