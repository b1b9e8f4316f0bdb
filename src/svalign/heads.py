"""Per-head query/key weights of one model, and their ``head_weights`` table.

:class:`HeadWeights` is what the extract stage hands to the SVD and SAD stages, whichever way the model was read
(:mod:`svalign.models`: ``TransformerBridge``, or the ``transformers`` modules directly). Besides W_Q/W_K it carries
every per-model fact the decomposition needs: rotary parameters (per layer when layers differ, as in Gemma 3),
sliding windows per layer, the attention-logit soft-cap (recorded; SAD decomposes the pre-cap logit) and whether q
and k are RMS-normalised per token (then SAD carries the per-token scalars 1/ρ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from svalign.families import ModelFamily, family_of
from svalign.io import tensor

__all__ = ["QK_NORMS", "HeadWeights", "RotarySpec", "head_weights_table", "read_head_weights", "theta_frequencies"]

QK_NORMS = ("", "per_head", "all_heads")
"""``HeadWeights.qk_norm``: none, RMSNorm over each head's q/k (Qwen3, Gemma 3), over all heads at once (OLMo 2)."""


def theta_frequencies(base: float, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """RoPE's default inverse frequencies θ_i = base^(−2i/dim), i < dim/2 ``[dim / 2]`` (float64)."""
    return base ** (-torch.arange(dim // 2, dtype=torch.float64, device=device) * 2 / dim)


@dataclass(frozen=True)
class RotarySpec:
    """Rotary position embedding of a model (None for models without RoPE).

    Attributes:
        dim: number of rotated dimensions per head (== d_head for Llama, 16 of 64 for Pythia).
        base: θ base (from the HF config: SmolLM2's is 100000 while the bridge's cfg says 10000); layer 0's when
            ``layer_bases`` is set.
        style: ``rotate_half`` (GPT-NeoX / Llama / Pythia: dimension i pairs with i + dim/2) or ``interleaved``
            (GPT-J: dimension 2i pairs with 2i + 1).
        layer_bases: θ base of every layer when the layers differ (Gemma 3: local 10⁴, global 10⁶), else empty.
        frequencies: every layer's ``[dim / 2]`` inverse frequencies as the model's own rotary embedding computes
            them, for rescaled RoPE (``rope_type`` llama3, linear, yarn, dynamic, longrope); empty: θ_i =
            base^(−2i/dim).
        attention_factors: every layer's factor on cos and sin (YaRN, LongRoPE: q·k of the rotated dimensions
            gains its square); empty: 1.
        max_length: longest sequence the frequencies hold for (a length-dependent RoPE, dynamic or longrope, is
            exact only within its original context); 0: any.
    """

    dim: int
    base: float
    style: str = "rotate_half"
    layer_bases: tuple[float, ...] = ()
    frequencies: tuple[tuple[float, ...], ...] = ()
    attention_factors: tuple[float, ...] = ()
    max_length: int = 0

    def base_of(self, layer: int) -> float:
        """The θ base of one layer."""
        return self.layer_bases[layer] if self.layer_bases else self.base

    def frequencies_of(self, layer: int) -> torch.Tensor:
        """The inverse frequencies θ_i of one layer ``[dim / 2]`` (float64)."""
        if self.frequencies:
            return torch.tensor(self.frequencies[layer], dtype=torch.float64)
        return theta_frequencies(self.base_of(layer), self.dim)

    def factor_of(self, layer: int) -> float:
        """The factor on cos and sin of one layer (1 unless YaRN or LongRoPE)."""
        return self.attention_factors[layer] if self.attention_factors else 1.0

    @property
    def per_layer(self) -> bool:
        """The layers' rotations differ (θ bases, frequencies or factors)."""
        distinct = {(tuple(self.frequencies_of(layer).tolist()), self.factor_of(layer)) for layer in self._layers()}
        return len(distinct) > 1

    def _layers(self) -> range:
        return range(max(len(self.layer_bases), len(self.frequencies), len(self.attention_factors), 1))


@dataclass
class HeadWeights:
    """QK weights of every attention head of one model.

    Attributes:
        W_Q: ``[n_layers, n_heads, d_model, d_head]`` (after the documented processing).
        W_K: ``[n_layers, n_heads, d_model, d_head]``; with GQA the key head of query head h is repeated.
        b_Q, b_K: ``[n_layers, n_heads, d_head]`` or None.
        kv_head: ``[n_heads]`` key/value head read by each query head (h // group for GQA, else h).
        rotary: RoPE parameters or None.
        attn_scale: the divisor of q·k before the softmax (√d_head; √query_pre_attn_scalar for Gemma 2/3).
        causal: decoder (causal mask) or encoder (bidirectional).
        architecture: HF ``model_type`` (bert, llama, gpt2, gpt_neox, …).
        processing: how W_Q/W_K relate to the checkpoint (norm folding), stated in provenance and docs/method.md.
        head_input_hook: the hook (``{layer}`` to fill in) whose output the head's W_Q/W_K act on.
        sliding_window: per layer, the keys a query sees (t − w < j ≤ t; 0: the whole causal prefix); empty: none.
        softcap: attention-logit soft-cap c (ℓ → c·tanh(ℓ/c) before the softmax; Gemma 2), 0 for none. Recorded
            only: the decomposition is of the pre-cap logit.
        qk_norm: one of :data:`QK_NORMS`; when set, the norm gains are folded into W_Q/W_K and the logit is
            ``x̃_t Ω x̃_jᵀ / (ρ_q(t) ρ_k(j))`` with per-token RMS values ρ that the SAD stage reads per prompt.
    """

    W_Q: torch.Tensor
    W_K: torch.Tensor
    b_Q: torch.Tensor | None
    b_K: torch.Tensor | None
    kv_head: torch.Tensor
    rotary: RotarySpec | None
    attn_scale: float
    causal: bool
    architecture: str
    processing: str
    head_input_hook: str
    sliding_window: tuple[int, ...] = ()
    softcap: float = 0.0
    qk_norm: str = ""

    @property
    def family(self) -> ModelFamily:
        """The architecture's :class:`ModelFamily` (what to do differently for an encoder)."""
        return family_of(self.architecture)

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]

    @property
    def d_model(self) -> int:
        return self.W_Q.shape[2]

    @property
    def d_head(self) -> int:
        return self.W_Q.shape[3]

    def window(self, layer: int) -> int | None:
        """The sliding window of one layer, or None when its queries see the whole causal prefix."""
        window = self.sliding_window[layer] if self.sliding_window else 0
        return int(window) if window else None


def head_weights_table(weights: HeadWeights, model: str, variant: str) -> dict[str, Any]:
    """Column data for ``tables.HEAD_WEIGHTS`` (rows ordered by layer, then head)."""
    L, H, _, dh = weights.W_Q.shape
    rows = L * H
    zeros = torch.zeros(L, H, dh)
    rotary = weights.rotary
    per_layer = np.repeat(np.arange(L), H)
    return {
        "model": [model] * rows,
        "variant": [variant] * rows,
        "layer": per_layer,
        "head": np.tile(np.arange(H), L),
        "kv_head": np.tile(weights.kv_head.numpy(), L),
        "W_Q": weights.W_Q.reshape(rows, *weights.W_Q.shape[2:]).numpy(),
        "W_K": weights.W_K.reshape(rows, *weights.W_K.shape[2:]).numpy(),
        "b_Q": (weights.b_Q if weights.b_Q is not None else zeros).reshape(rows, dh).numpy(),
        "b_K": (weights.b_K if weights.b_K is not None else zeros).reshape(rows, dh).numpy(),
        "has_bias": [weights.b_Q is not None or weights.b_K is not None] * rows,
        "rotary_dim": [rotary.dim if rotary else 0] * rows,
        "rotary_base": [rotary.base_of(int(layer)) if rotary else 0.0 for layer in per_layer],
        "rotary_style": [rotary.style if rotary else ""] * rows,
        "rotary_frequencies": [
            np.array(rotary.frequencies[int(layer)] if rotary and rotary.frequencies else [], dtype=np.float64)
            for layer in per_layer
        ],
        "rotary_attention_factor": [rotary.factor_of(int(layer)) if rotary else 1.0 for layer in per_layer],
        "rotary_max_length": [rotary.max_length if rotary else 0] * rows,
        "attn_scale": [weights.attn_scale] * rows,
        "causal": [weights.causal] * rows,
        "architecture": [weights.architecture] * rows,
        "processing": [weights.processing] * rows,
        "head_input_hook": [weights.head_input_hook] * rows,
        "sliding_window": [weights.window(int(layer)) or 0 for layer in per_layer],
        "attn_softcap": [weights.softcap] * rows,
        "qk_norm": [weights.qk_norm] * rows,
    }


def _rotary_of(first: dict[str, Any], bases: np.ndarray, frequencies: list, factors: np.ndarray) -> RotarySpec | None:
    """The :class:`RotarySpec` of a table: per layer its θ base, its frequencies (empty lists: from θ) and its
    factor on cos and sin."""
    if not first["rotary_dim"]:
        return None
    layer_bases = tuple(float(b) for b in bases) if len(set(bases.tolist())) > 1 else ()
    scaled = tuple(tuple(float(f) for f in layer) for layer in frequencies) if any(len(f) for f in frequencies) else ()
    return RotarySpec(
        first["rotary_dim"],
        first["rotary_base"],
        first["rotary_style"],
        layer_bases,
        scaled,
        tuple(float(f) for f in factors) if (factors != 1.0).any() else (),
        int(first["rotary_max_length"]),
    )


def read_head_weights(table: pa.Table) -> HeadWeights:
    """Rebuild :class:`HeadWeights` from a ``tables.HEAD_WEIGHTS`` table (rows in layer, head order)."""
    layers = table.column("layer").to_numpy()
    heads = table.column("head").to_numpy()
    L, H = int(layers.max()) + 1, int(heads.max()) + 1
    if len(layers) != L * H or not (np.array_equal(layers, np.repeat(np.arange(L), H))):
        raise ValueError("head_weights rows must cover every (layer, head) in order")

    def grid(name: str) -> torch.Tensor:
        array = tensor(table, name)
        return torch.from_numpy(array.reshape(L, H, *array.shape[1:]).copy())  # Arrow buffers are read-only

    def per_layer(name: str) -> np.ndarray:
        return table.column(name).to_numpy()[::H]

    first = {
        name: table.column(name)[0].as_py() for name in table.column_names if name not in ("W_Q", "W_K", "b_Q", "b_K")
    }
    windows = per_layer("sliding_window")
    return HeadWeights(
        W_Q=grid("W_Q"),
        W_K=grid("W_K"),
        b_Q=grid("b_Q") if first["has_bias"] else None,
        b_K=grid("b_K") if first["has_bias"] else None,
        kv_head=torch.from_numpy(table.column("kv_head").to_numpy()[:H].copy()),
        rotary=_rotary_of(
            first,
            per_layer("rotary_base"),
            table.column("rotary_frequencies").to_pylist()[::H],
            per_layer("rotary_attention_factor"),
        ),
        attn_scale=first["attn_scale"],
        causal=first["causal"],
        architecture=first["architecture"],
        processing=first["processing"],
        head_input_hook=first["head_input_hook"],
        sliding_window=tuple(int(w) for w in windows) if windows.any() else (),
        softcap=first["attn_softcap"],
        qk_norm=first["qk_norm"],
    )
