"""Families read directly from their ``transformers`` modules (:data:`svalign.families.TRANSFORMERS_FAMILIES`).

:class:`TransformersModel` wraps a ``*ForCausalLM`` loaded under the attention implementation ``svalign_capture``
(registered here): it records the query and key each attention module hands to its attention function (after
rotary embedding, q/k norms and any pre-scaling) and the attention weights the family's own eager function
returns. :meth:`TransformersModel.run_with_cache` then answers the SAD stage with the names the bridge uses:

* ``blocks.{L}.ln1.hook_normalized``: the normalised residual before the input norm's gain, ``[batch, pos, d_model]``
  (``blocks.{L}.attn.hook_in``, the residual itself, when the attention reads no norm: OLMo 2, post-LN OPT);
* ``blocks.{L}.attn.hook_attn_scores``: ``(q · k) · scaling`` before any soft-cap and mask, ``[batch, head, t, j]``
  (the SAD stage multiplies by ``attn_scale`` to get the unscaled score);
* ``blocks.{L}.attn.hook_pattern``: the attention weights ``[batch, head, t, j]``;
* q/k-norm families: ``blocks.{L}.attn.hook_query_scale`` / ``hook_key_scale``, the per-token 1/ρ ``[batch, head, t]``.

:func:`extract_head_weights` reads W_Q/W_K (+ biases) from the same modules and folds the input norm's gain (γ or
1 + w), the LayerNorm bias (β W into b) and the q/k-norm gains into them, so ``x̂ W_Q`` is the model's q up to the
per-token 1/ρ. Everything here is verified against an independent oracle (``tests/unit/test_families.py``).
"""

from __future__ import annotations

import contextvars
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from svalign.families import LENGTH_DEPENDENT_ROPE, ModelFamily, check_supported, layer_rope, sliding_windows
from svalign.heads import HeadWeights, RotarySpec

__all__ = [
    "CAPTURE",
    "TransformersModel",
    "check_float32",
    "extract_head_weights",
    "load_transformers_model",
    "scaled_rope",
]

CAPTURE = "svalign_capture"
"""The attention implementation registered with ``transformers``: the family's eager attention, recorded."""
_CALLS: contextvars.ContextVar[list | None] = contextvars.ContextVar("svalign_attention_calls", default=None)
GPTJ_ROPE_THETA = 10000.0
"""GPT-J's rotary base (fixed in its modelling code, absent from its config)."""


def _capture_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The module's own eager attention; records ``(query, key, scaling, weights)`` while a capture is active."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    output, weights = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    calls = _CALLS.get()
    if calls is not None:
        calls.append((query, key, query.shape[-1] ** -0.5 if scaling is None else float(scaling), weights))
    return output, weights


def _register_capture() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(CAPTURE, _capture_attention)
    AttentionMaskInterface.register(CAPTURE, eager_mask)


def _input_norm(layer: Any, layout: Any) -> Any:
    """The norm whose output the layer's attention reads (Falcon's ``ln_attn`` where the layer has one)."""
    if layout.attention_norm and hasattr(layer, layout.attention_norm):
        return getattr(layer, layout.attention_norm)
    return getattr(layer, layout.norm)


def _eps(norm: Any) -> float:
    eps = getattr(norm, "variance_epsilon", None)
    return float(norm.eps if eps is None else eps)


def _normalized(x: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    """The input norm without its affine part, in float32: (x − μ)/σ (LayerNorm) or x/ρ (RMSNorm)."""
    x = x.float()
    if kind == "layernorm":
        return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _inverse_rms(projected: torch.Tensor, heads: int, per_head: bool, eps: float) -> torch.Tensor:
    """1/ρ per token (and head) of a q or k projection ``[b, pos, heads·d_head]``.

    Returns:
        ``[b, heads, pos]`` (``per_head``: one RMS per head's d_head slice) or ``[b, 1, pos]`` (over all heads).
    """
    x = projected.float()
    if per_head:
        x = x.view(*x.shape[:2], heads, -1)
    inverse = torch.rsqrt(x.pow(2).mean(-1) + eps)  # [b, pos, heads] or [b, pos]
    return inverse.transpose(1, 2) if per_head else inverse.unsqueeze(1)


@dataclass
class TransformersModel:
    """A ``*ForCausalLM`` (float32, eval, attention implementation :data:`CAPTURE`) as the SAD stage reads it.

    Attributes:
        model: the Hugging Face module; tokenizer: its tokenizer; family: its :class:`ModelFamily`.
        cfg: ``n_ctx`` (the context length), as on a ``TransformerBridge``.
    """

    model: Any
    tokenizer: Any
    family: ModelFamily
    cfg: SimpleNamespace = field(init=False)

    def __post_init__(self) -> None:
        config = self.model.config
        self.cfg = SimpleNamespace(n_ctx=getattr(config, "max_position_embeddings", None) or config.n_positions)

    @property
    def pre_norm(self) -> bool:
        """The attention reads an input norm's output (else the residual stream: OLMo 2, post-LN OPT)."""
        return self.family.layout.norm is not None and getattr(self.model.config, "do_layer_norm_before", True)

    def layers(self) -> list[Any]:
        """The decoder layers, in order."""
        module = self.model
        for name in self.family.layout.layers.split("."):
            module = getattr(module, name)
        return list(module)

    def _hooks(self, cache: dict[str, torch.Tensor]) -> list[Any]:
        """Forward hooks that fill ``cache`` with every layer's head input and q/k-norm scalars."""
        layout, kv_head, handles = self.family.layout, _kv_head(self.model.config), []
        for index, layer in enumerate(self.layers()):
            attention = getattr(layer, layout.attention)
            if self.pre_norm:
                norm, name = _input_norm(layer, layout), f"blocks.{index}.ln1.hook_normalized"

                def store_norm(module, args, output, name=name):
                    cache[name] = _normalized(args[0], layout.norm_kind, _eps(module))

                handles.append(norm.register_forward_hook(store_norm))
            else:

                def store_input(module, args, kwargs, name=f"blocks.{index}.attn.hook_in"):
                    cache[name] = (kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]).float()

                handles.append(attention.register_forward_pre_hook(store_input, with_kwargs=True))
            if layout.qk_norm:
                handles += self._qk_norm_hooks(cache, index, attention, kv_head)
        return handles

    def _qk_norm_hooks(self, cache: dict, index: int, attention: Any, kv_head: torch.Tensor) -> list[Any]:
        """Hooks on one layer's q/k projections storing 1/ρ_q, 1/ρ_k ``[b, n_heads, pos]``: the RMS its q/k norms
        divide by, from the projections' outputs and the norms' eps (keys expanded to query heads by ``kv_head``)."""
        per_head, config = self.family.layout.qk_norm == "per_head", self.model.config
        n_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads

        def store_query(module, args, output):
            scale = _inverse_rms(output, config.num_attention_heads, per_head, _eps(attention.q_norm))
            cache[f"blocks.{index}.attn.hook_query_scale"] = scale.expand(-1, len(kv_head), -1)

        def store_key(module, args, output):
            scale = _inverse_rms(output, n_kv, per_head, _eps(attention.k_norm))
            cache[f"blocks.{index}.attn.hook_key_scale"] = (scale[:, kv_head] if per_head else scale).expand(
                -1, len(kv_head), -1
            )

        return [attention.q_proj.register_forward_hook(store_query), attention.k_proj.register_forward_hook(store_key)]

    def _forward_recording_rotary(self, tokens: torch.Tensor, calls: list) -> torch.Tensor:
        """A forward pass of a family that computes its attention itself (Falcon): q and k as its rotary function
        returns them, each layer's scaling, and the patterns ``output_attentions`` returns, into ``calls``."""
        module = sys.modules[type(self.model).__module__]
        rotary = module.apply_rotary_pos_emb
        recorded: list = []

        def recording(query, key, *args, **kwargs):
            query, key = rotary(query, key, *args, **kwargs)
            recorded.append((query, key))
            return query, key

        module.apply_rotary_pos_emb = recording
        try:
            out = self.model(input_ids=tokens, output_attentions=True)
        finally:
            module.apply_rotary_pos_emb = rotary
        attentions = [getattr(layer, self.family.layout.attention) for layer in self.layers()]
        for (query, key), attention, weights in zip(recorded, attentions, out.attentions, strict=True):
            calls.append((query, key, float(attention.inv_norm_factor), weights))
        return out.logits

    def run_with_cache(self, tokens: torch.Tensor, names_filter: Any = None) -> tuple[torch.Tensor, dict]:
        """Logits ``[batch, pos, vocab]`` and the cache described in the module docstring (filtered by name)."""
        cache: dict[str, torch.Tensor] = {}
        calls: list = []
        handles = self._hooks(cache)
        token = _CALLS.set(calls)
        try:
            with torch.no_grad():
                if self.family.layout.capture == "rotary":
                    logits = self._forward_recording_rotary(tokens, calls)
                else:
                    logits = self.model(input_ids=tokens).logits
        finally:
            _CALLS.reset(token)
            for handle in handles:
                handle.remove()
        if len(calls) != len(self.layers()):
            raise RuntimeError(f"recorded {len(calls)} attention calls for {len(self.layers())} layers")
        for index, (query, key, scaling, weights) in enumerate(calls):
            key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)  # repeat_kv: head h reads h // group
            cache[f"blocks.{index}.attn.hook_attn_scores"] = (query.float() @ key.float().mT) * scaling
            cache[f"blocks.{index}.attn.hook_pattern"] = weights.float()
        return logits, {k: v for k, v in cache.items() if names_filter is None or names_filter(k)}


def check_float32(module: Any, model_dir: Path, variant: str) -> None:
    """Fail unless every floating-point parameter of a loaded model is float32 (the decomposition's tolerance
    assumes it; a config naming float16 must not carry its random-init twin into half precision)."""
    dtypes = {p.dtype for p in module.parameters() if p.is_floating_point()}
    if dtypes - {torch.float32}:
        raise ValueError(
            f"{model_dir} ({variant}) loaded with parameters of dtype {sorted(map(str, dtypes))}, not float32"
        )


def load_transformers_model(
    model_dir: str | Path, variant: str = "trained", seed: int = 0, device: str = "cpu"
) -> TransformersModel:
    """Load a local HF directory of a :data:`~svalign.families.TRANSFORMERS_FAMILIES` family, trained or as a seeded
    random-init twin (the class's own init from the config, under a forked RNG seeded with ``seed``)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if variant not in ("trained", "random"):
        raise ValueError(f"variant must be trained or random, got {variant!r}")
    _register_capture()
    config = AutoConfig.from_pretrained(str(model_dir))
    family = check_supported(config)
    if family.loader != "transformers":
        raise ValueError(f"{family.architecture} is read through TransformerBridge, not from transformers directly")
    implementation = "eager" if family.layout.capture == "rotary" else CAPTURE  # Falcon: its own attention code
    options = {"attn_implementation": implementation, "dtype": torch.float32}
    if variant == "trained":
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **options)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, **options)
    model = model.to(device).eval()
    check_float32(model, model_dir, variant)
    return TransformersModel(model, AutoTokenizer.from_pretrained(str(model_dir)), family)


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------


def _kv_head(config: Any) -> torch.Tensor:
    """``[n_heads]``: the key/value head each query head reads (HF ``repeat_kv``: h // group)."""
    n_heads = config.num_attention_heads
    if getattr(config, "new_decoder_architecture", False):  # Falcon 40B/180B: grouped key heads
        n_kv = config.num_kv_heads
    elif getattr(config, "multi_query", False):  # GPT-BigCode, Falcon 7B: one key head
        n_kv = 1
    else:
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv} key heads evenly")
    return torch.arange(n_heads) // (n_heads // n_kv)


def _projections(attention: Any, qkv: str, q_size: int, k_size: int) -> list[tuple]:
    """``[(W_q [d, q_size], b_q or None), (W_k [d, k_size], b_k or None)]``, row convention (q = x W + b), float64."""

    def linear(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        return weight.detach().double().T, None if bias is None else bias.detach().double()

    if qkv == "separate":
        return [linear(p.weight, p.bias) for p in (attention.q_proj, attention.k_proj)]
    fused = getattr(attention, qkv)
    return [
        linear(fused.weight[r], None if fused.bias is None else fused.bias[r])
        for r in _fused_rows(attention, q_size, k_size)
    ]


def _fused_rows(attention: Any, q_size: int, k_size: int) -> list[torch.Tensor]:
    """The rows of a fused qkv projection that give q ``[q_size]`` and k ``[k_size]``, in head order.

    Blocks q, then k, then v (Phi-3, multi-query GPT-BigCode and Falcon); q, k, v per head (GPT-BigCode and Falcon
    with a key head per query head); per key group its query heads, then k, then v (Falcon's new decoder
    architecture).
    """
    d_head = attention.head_dim
    offsets = torch.arange(d_head)
    if getattr(attention, "new_decoder_architecture", False):
        n_kv = k_size // d_head
        group = q_size // k_size
        starts = torch.arange(n_kv) * (group + 2) * d_head  # [kv]
        query = starts[:, None, None] + torch.arange(group)[None, :, None] * d_head + offsets  # [kv, group, d]
        key = starts[:, None] + group * d_head + offsets  # [kv, d]
        return [query.flatten(), key.flatten()]
    if getattr(attention, "multi_query", True) is False:
        per_head = torch.arange(q_size // d_head)[:, None] * 3 * d_head + offsets
        return [per_head.flatten(), per_head.flatten() + d_head]
    return [torch.arange(q_size), torch.arange(q_size, q_size + k_size)]


def _norm_affine(norm: Any, kind: str, d_model: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The input norm's gain ``[d]`` (γ, or 1 + w for Gemma) and shift ``[d]`` (LayerNorm β) or None, float64."""
    weight = getattr(norm, "weight", None)
    gain = torch.ones(d_model, dtype=torch.float64) if weight is None else weight.detach().double()
    if kind == "rmsnorm_plus_one":
        gain = 1.0 + gain
    bias = getattr(norm, "bias", None)
    return gain, None if bias is None else bias.detach().double()


def _qk_gain(norm: Any, size: int, plus_one: bool) -> torch.Tensor:
    """The q or k norm's gain, tiled to the projection's width ``[size]`` (per-head norms share one ``[d_head]``)."""
    gain = norm.weight.detach().double()
    gain = 1.0 + gain if plus_one else gain
    return gain.repeat(size // gain.numel())


def _fold(W: torch.Tensor, b: torch.Tensor | None, gain, shift, qk_gain) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``diag(γ) W`` and ``b + β W``, then the q/k-norm gain on the output side: the factor of ``x̂`` (float64)."""
    if shift is not None:
        b = shift @ W + (0 if b is None else b)
    W = gain[:, None] * W if gain is not None else W
    if qk_gain is not None:
        W, b = W * qk_gain, None if b is None else b * qk_gain
    return W, b


def _layer_factors(model: TransformersModel, layer: Any, kv_head: torch.Tensor, d_head: int) -> tuple:
    """One layer's ``(W_Q, b_Q, W_K, b_K)`` per query head ``[H, d, d_head]`` / ``[H, d_head]`` (biases may be None)."""
    layout, n_heads, n_kv = model.family.layout, len(kv_head), int(kv_head.max()) + 1
    attention = getattr(layer, layout.attention)
    (W_q, b_q), (W_k, b_k) = _projections(attention, layout.qkv, n_heads * d_head, n_kv * d_head)
    gain = shift = None
    if model.pre_norm:
        gain, shift = _norm_affine(_input_norm(layer, layout), layout.norm_kind, W_q.shape[0])
    g_q = g_k = None
    if layout.qk_norm:
        g_q = _qk_gain(attention.q_norm, n_heads * d_head, layout.qk_norm_plus_one)
        g_k = _qk_gain(attention.k_norm, n_kv * d_head, layout.qk_norm_plus_one)
    W_q, b_q = _fold(W_q, b_q, gain, shift, g_q)
    W_k, b_k = _fold(W_k, b_k, gain, shift, g_k)

    def heads(W: torch.Tensor, b: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return W.view(W.shape[0], n, d_head).transpose(0, 1), None if b is None else b.view(n, d_head)

    (W_q, b_q), (W_k, b_k) = heads(W_q, b_q, n_heads), heads(W_k, b_k, n_kv)
    return W_q, b_q, W_k[kv_head], None if b_k is None else b_k[kv_head]


def scaled_rope(module: torch.nn.Module, config: Any, dim: int) -> dict[str, Any]:
    """:class:`RotarySpec` fields of a rescaled RoPE, read from the model's own rotary embedding (``{}`` when every
    layer's ``rope_type`` is ``default``, whose frequencies follow from θ).

    ``transformers`` computes each rope type's inverse frequencies and its factor on cos and sin when it builds the
    rotary embedding (``inv_freq``, ``attention_scaling``; Gemma 3 per layer type), so every type it implements is
    read the same way. Length-dependent types (``dynamic``, ``longrope``) recompute them beyond their original
    context: the frequencies read here (``original_inv_freq``) hold up to it, and ``max_length`` records it.
    """
    n_layers = config.num_hidden_layers
    types = [layer_rope(config, layer).get("rope_type", "default") for layer in range(n_layers)]
    if all(kind == "default" for kind in types):
        return {}
    embedding = next(m for name, m in module.named_modules() if name.endswith("rotary_emb"))
    layer_types = getattr(config, "layer_types", None)
    frequencies, factors = [], []
    for layer in range(n_layers):
        prefix = ""
        if layer_types is not None and hasattr(embedding, f"{layer_types[layer]}_original_inv_freq"):
            prefix = f"{layer_types[layer]}_"
        inverse = getattr(embedding, f"{prefix}original_inv_freq", None)
        inverse = getattr(embedding, f"{prefix}inv_freq") if inverse is None else inverse
        if inverse.numel() != dim // 2:
            raise ValueError(f"layer {layer}: the rotary embedding has {inverse.numel()} frequencies, not {dim // 2}")
        frequencies.append(tuple(inverse.double().tolist()))
        factors.append(float(getattr(embedding, f"{prefix}attention_scaling", 1.0)))
    limits = [
        int(layer_rope(config, layer).get("original_max_position_embeddings") or config.max_position_embeddings)
        for layer, kind in enumerate(types)
        if kind in LENGTH_DEPENDENT_ROPE
    ]
    return {
        "frequencies": tuple(frequencies),
        "attention_factors": tuple(factors) if any(factor != 1.0 for factor in factors) else (),
        "max_length": min(limits) if limits else 0,
    }


def _rotary(model: TransformersModel, d_head: int) -> RotarySpec | None:
    """Rotary parameters from the HF config (per layer type for Gemma 3), in the family's convention."""
    layout, config = model.family.layout, model.model.config
    if not layout.rotary:
        return None
    parameters = [layer_rope(config, layer) for layer in range(config.num_hidden_layers)]
    if model.family.architecture == "gptj":  # rotary_dim in the config, base fixed in the modelling code
        dim, bases = int(config.rotary_dim), [GPTJ_ROPE_THETA] * len(parameters)
    else:
        fraction = parameters[0].get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)) or 1.0
        dim, bases = int(d_head * fraction), [float(p["rope_theta"]) for p in parameters]
    layer_bases = tuple(bases) if len(set(bases)) > 1 else ()
    spec = RotarySpec(dim, bases[0], layout.rotary, layer_bases, **scaled_rope(model.model, config, dim))
    uses_rope = getattr(config, "no_rope_layers", None)  # SmolLM3: 1 where a layer rotates, 0 where it does not
    if uses_rope is not None and not all(uses_rope[: config.num_hidden_layers]):
        frequencies = tuple(
            tuple(spec.frequencies_of(layer).tolist()) if uses_rope[layer] else (0.0,) * (dim // 2)
            for layer in range(config.num_hidden_layers)
        )  # a NoPE layer: zero frequencies, R_δ = I, one form for every offset
        spec = replace(spec, frequencies=frequencies)
    return spec


def _processing(model: TransformersModel) -> str:
    layout = model.family.layout
    if not model.pre_norm:
        text = "read from the transformers modules; no input norm (W_Q/W_K read the residual stream)"
    else:
        gain = "(1 + w)" if layout.norm_kind == "rmsnorm_plus_one" else "γ"
        bias = " and bias β (into b_Q/b_K)" if layout.norm_kind == "layernorm" else ""
        text = f"read from the transformers modules; input-norm gain {gain}{bias} folded into W_Q/W_K"
    if layout.qk_norm:
        text += f"; {layout.qk_norm} q/k RMSNorm gains folded, per-token 1/ρ carried by SAD"
    return text


def extract_head_weights(model: TransformersModel) -> HeadWeights:
    """Per-head W_Q, W_K (GQA expanded), biases, rotary parameters, scale, windows, soft-cap and q/k-norm kind."""
    config, layers = model.model.config, model.layers()
    kv_head = _kv_head(config)
    attentions = [getattr(layer, model.family.layout.attention) for layer in layers]
    d_head = int(attentions[0].head_dim)
    scales = {1.0 / float(getattr(attention, "scaling", None) or attention.inv_norm_factor) for attention in attentions}
    if len(scales) != 1:
        raise ValueError(f"{model.family.architecture}: the layers scale their logits differently: {sorted(scales)}")
    with torch.no_grad():
        factors = [_layer_factors(model, layer, kv_head, d_head) for layer in layers]
    W_Q, b_Q, W_K, b_K = ([f[i] for f in factors] for i in range(4))
    has_bias = any(b is not None for b in b_Q + b_K)

    def stack(parts: list, like: list) -> torch.Tensor:
        return torch.stack(
            [p if p is not None else torch.zeros_like(w[..., 0, :]) for p, w in zip(parts, like, strict=True)]
        )

    windows = sliding_windows(config)
    return HeadWeights(
        W_Q=torch.stack(W_Q).float(),
        W_K=torch.stack(W_K).float(),
        b_Q=stack(b_Q, W_Q).float() if has_bias else None,
        b_K=stack(b_K, W_K).float() if has_bias else None,
        kv_head=kv_head,
        rotary=_rotary(model, d_head),
        attn_scale=scales.pop(),
        causal=True,
        architecture=model.family.architecture,
        processing=_processing(model),
        head_input_hook="blocks.{layer}.ln1.hook_normalized" if model.pre_norm else "blocks.{layer}.attn.hook_in",
        sliding_window=tuple(windows) if any(windows) else (),
        softcap=float(getattr(config, "attn_logit_softcapping", None) or 0.0),
        qk_norm=model.family.layout.qk_norm,
    )
