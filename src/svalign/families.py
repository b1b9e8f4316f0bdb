"""The model families the pipeline reads, and how: every architecture-dependent rule in one place (torch-free).

A family is a Hugging Face ``model_type``. Each verified family is read one of two ways:

* through transformer-lens' ``TransformerBridge`` (:data:`BRIDGE_FAMILIES`: BERT, Llama/SmolLM2, GPT-NeoX/Pythia,
  GPT-2), whose ``W_Q``/``W_K`` are the ones TransformerLens users know;
* directly from the ``transformers`` modules (:data:`TRANSFORMERS_FAMILIES`: :class:`Layout` says where each
  family keeps its attention, input norm and q/k norms), for the families added after those four: several carry
  what the bridge does not reproduce (soft-capping, q/k norms, ``query_pre_attn_scalar``, interleaved rotary,
  per-layer RoPE bases, OPT's pre-scaled q, multi-query fused projections), and one path serves them all.

Both are verified against an independent oracle over plain ``transformers`` (``tests/unit/test_families.py``).
Anything else — an unverified architecture, or a verified one with an option whose logits are not a bilinear form
of the head inputs (up to per-token scalars) — is refused by :func:`check_supported` before any weight is read,
with a message naming the family and the reason, never computed wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "BRIDGE_FAMILIES",
    "ENCODER_ARCHITECTURES",
    "LENGTH_DEPENDENT_ROPE",
    "TRANSFORMERS_FAMILIES",
    "Layout",
    "ModelFamily",
    "UnsupportedFamilyError",
    "check_supported",
    "family_of",
    "layer_rope",
    "sliding_windows",
]

ENCODER_ARCHITECTURES = frozenset({"bert"})
"""HF ``model_type`` values read as post-LN encoders; every other architecture is a causal decoder."""

BRIDGE_FAMILIES = frozenset({"bert", "llama", "gpt_neox", "gpt2"})
"""Families read through ``TransformerBridge`` (with ``enable_compatibility_mode()`` for the pre-norm decoders)."""


class UnsupportedFamilyError(ValueError):
    """A model whose attention logits the pipeline cannot decompose exactly; the message names family and reason."""


@dataclass(frozen=True)
class Layout:
    """Where a decoder family keeps what its attention logits depend on, in the ``*ForCausalLM`` module tree.

    Attributes:
        layers: attribute path of the decoder layers (a ``ModuleList``) from the causal-LM module.
        attention: the attention module's attribute in a layer.
        norm: the input norm's attribute in a layer (its output is what q/k read), or None when the attention reads
            the residual stream itself (OLMo 2; OPT with ``do_layer_norm_before: false``).
        norm_kind: ``layernorm`` ((x − μ)/σ · γ + β), ``rmsnorm`` (x/ρ · γ) or ``rmsnorm_plus_one`` (x/ρ · (1 + w),
            Gemma).
        qkv: ``separate`` (``q_proj``, ``k_proj``) or the fused projection's attribute (rows q, then k, then v:
            ``qkv_proj`` of Phi-3; ``c_attn`` of GPT-BigCode, whose rows are q, k, v per head unless multi-query).
        qk_norm: ``""`` (none), ``per_head`` (RMSNorm over each head's d_head: Qwen3, Gemma 3) or ``all_heads``
            (RMSNorm over the concatenated heads: OLMo 2), applied to q and k before the rotary embedding.
        qk_norm_plus_one: the q/k norm gain is ``1 + w`` (Gemma 3).
        rotary: ``rotate_half``, ``interleaved`` (GPT-J: pairs 2i, 2i + 1) or ``""`` (learned absolute positions).
        attention_norm: a layer's own attention norm, read instead of ``norm`` where a layer has it (Falcon's
            ``ln_attn`` of the new decoder architecture with two parallel norms).
        capture: how the forward pass records q, k and the pattern: ``attention_function`` (the family's eager
            attention function, through ``transformers``' attention interface) or ``rotary`` (the family computes
            its attention itself: q and k recorded as its rotary function returns them, the pattern from
            ``output_attentions``; Falcon).
    """

    layers: str
    attention: str = "self_attn"
    norm: str | None = "input_layernorm"
    norm_kind: str = "rmsnorm"
    qkv: str = "separate"
    qk_norm: str = ""
    qk_norm_plus_one: bool = False
    rotary: str = "rotate_half"
    attention_norm: str | None = None
    capture: str = "attention_function"


TRANSFORMERS_FAMILIES: dict[str, Layout] = {
    "qwen2": Layout("model.layers"),
    "mistral": Layout("model.layers"),
    "gemma": Layout("model.layers", norm_kind="rmsnorm_plus_one"),
    "gemma2": Layout("model.layers", norm_kind="rmsnorm_plus_one"),
    "gemma3_text": Layout("model.layers", norm_kind="rmsnorm_plus_one", qk_norm="per_head", qk_norm_plus_one=True),
    "phi3": Layout("model.layers", qkv="qkv_proj"),
    "phi": Layout("model.layers", norm_kind="layernorm"),
    "opt": Layout("model.decoder.layers", norm="self_attn_layer_norm", norm_kind="layernorm", rotary=""),
    "gptj": Layout("transformer.h", attention="attn", norm="ln_1", norm_kind="layernorm", rotary="interleaved"),
    "qwen3": Layout("model.layers", qk_norm="per_head"),
    "olmo2": Layout("model.layers", norm=None, qk_norm="all_heads"),
    # mixture-of-experts MLPs beside standard attention
    "mixtral": Layout("model.layers"),
    "qwen2_moe": Layout("model.layers"),
    "qwen3_moe": Layout("model.layers", qk_norm="per_head"),
    "olmoe": Layout("model.layers", qk_norm="all_heads"),
    "granite": Layout("model.layers"),  # attention_multiplier is the module's own scaling (read as attn_scale)
    "stablelm": Layout("model.layers", norm_kind="layernorm"),
    "cohere": Layout("model.layers", norm_kind="layernorm", rotary="interleaved"),
    "smollm3": Layout("model.layers"),  # NoPE layers (no_rope_layers): zero rotary frequencies there
    "falcon": Layout(
        "transformer.h",
        "self_attention",
        "input_layernorm",
        "layernorm",
        qkv="query_key_value",
        attention_norm="ln_attn",
        capture="rotary",
    ),
    "gpt_bigcode": Layout("transformer.h", "attn", "ln_1", "layernorm", qkv="c_attn", rotary=""),
}
"""Families read directly from their ``transformers`` modules, by ``model_type``."""

_ALIBI = "ALiBi adds a per-head linear position bias to every logit, which is not a bilinear form of the head inputs"
_KNOWN_REFUSALS = {
    "bloom": _ALIBI,
    "mpt": _ALIBI,
    "gemma3": "multimodal Gemma 3 checkpoints are not supported; use a text-only one (model_type gemma3_text)",
}
_SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "dynamic", "longrope")
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")
"""Rope types whose frequencies change with the sequence length: exact within their original context only."""


@dataclass(frozen=True)
class ModelFamily:
    """How the pipeline reads one architecture (HF ``model_type``); build it with :func:`family_of`. Torch-free.

    Every architecture-dependent choice is a property here (or in :data:`TRANSFORMERS_FAMILIES`), so none is spelt
    as a ``"bert"`` comparison elsewhere.
    """

    architecture: str

    @property
    def is_encoder(self) -> bool:
        """Post-LN bidirectional encoder (BERT)."""
        return self.architecture in ENCODER_ARCHITECTURES

    @property
    def causal(self) -> bool:
        """Causal (decoder) attention mask; encoders attend to every key."""
        return not self.is_encoder

    @property
    def loader(self) -> str | None:
        """``bridge``, ``transformers`` or None (not a verified family: :func:`check_supported` refuses it)."""
        if self.architecture in BRIDGE_FAMILIES:
            return "bridge"
        return "transformers" if self.architecture in TRANSFORMERS_FAMILIES else None

    @property
    def layout(self) -> Layout | None:
        """Where the family keeps its attention (families read from ``transformers`` modules), else None."""
        return TRANSFORMERS_FAMILIES.get(self.architecture)

    @property
    def folds_norm(self) -> bool:
        """The input norm's gain (and LayerNorm bias) is folded into W_Q/W_K/b_Q/b_K.

        Bridge families: ``enable_compatibility_mode()`` folds it, except for post-LN BERT (TransformerLens does not
        support it; its W_Q/W_K stay as in the checkpoint). Families read from ``transformers``: folded whenever the
        attention reads a norm's output (:attr:`Layout.norm`; OPT's post-LN variant is decided from its config).
        """
        if self.layout is not None:
            return self.layout.norm is not None
        return not self.is_encoder

    @property
    def processing(self) -> str:
        """How W_Q/W_K relate to the checkpoint, as stated in provenance and docs/method.md (bridge families)."""
        if self.folds_norm:
            return "norm gain folded into W_Q/W_K (TransformerBridge.enable_compatibility_mode)"
        return "none (post-LN encoder: W_Q/W_K as in the checkpoint)"

    @property
    def head_input_hook(self) -> str:
        """The hook (``{layer}`` to fill in) whose output W_Q/W_K act on: the normalised residual after folding,
        else the previous LayerNorm's output, i.e. the residual stream itself."""
        return "blocks.{layer}.ln1.hook_normalized" if self.folds_norm else "blocks.{layer}.attn.q.hook_in"

    @property
    def scores_from_qk(self) -> bool:
        """The model's own pre-softmax scores are ``hook_q · hook_k``: the bridge's BERT ``hook_attn_scores`` holds
        the pattern instead (decoders: ``hook_attn_scores`` × attn_scale)."""
        return self.is_encoder


def family_of(architecture: str) -> ModelFamily:
    """The :class:`ModelFamily` of a HF ``model_type`` (as stored in ``HeadWeights.architecture``)."""
    return ModelFamily(architecture.lower())


# --------------------------------------------------------------------------------------------------
# Per-layer facts from a HF config, and the refusals
# --------------------------------------------------------------------------------------------------


def sliding_windows(config: Any) -> list[int]:
    """The sliding window of each layer (0: the whole causal prefix), as ``transformers`` builds the masks.

    A query t attends to keys ``t − window < j ≤ t`` (``window`` keys). ``layer_types`` (Gemma 2/3, Qwen2) says
    which layers slide; without it a configured ``sliding_window`` applies to every layer (Mistral, Phi-3).
    """
    n_layers = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return [0] * n_layers
    types = getattr(config, "layer_types", None)
    if types is None:
        return [int(window)] * n_layers
    return [int(window) if kind == "sliding_attention" else 0 for kind in types]


def layer_rope(config: Any, layer: int) -> dict[str, Any]:
    """The rotary parameters of one layer (``rope_type``, ``rope_theta``, …): Gemma 3 keeps one set per layer type."""
    parameters = getattr(config, "rope_parameters", None) or {}
    types = getattr(config, "layer_types", None)
    if types is not None and types[layer] in parameters:
        parameters = parameters[types[layer]]
    return dict(parameters)


def _rope_refusal(config: Any) -> str | None:
    for layer in range(config.num_hidden_layers):
        rope_type = layer_rope(config, layer).get("rope_type", "default")
        if rope_type not in _SUPPORTED_ROPE_TYPES:
            return (
                f"rope_type {rope_type!r} (layer {layer}) is not one whose frequencies are verified; supported: "
                f"{', '.join(_SUPPORTED_ROPE_TYPES)}"
            )
    return None


def _option_refusal(model_type: str, config: Any) -> str | None:
    """A verified family switched to an option the decomposition does not cover."""
    if model_type == "gpt2" and getattr(config, "scale_attn_by_inverse_layer_idx", False):
        return "scale_attn_by_inverse_layer_idx divides layer L's logits by L + 1, and one attn_scale per model is read"
    if model_type == "gpt2" and not getattr(config, "scale_attn_weights", True):
        return "scale_attn_weights: false (unscaled logits) is not read by the bridge's attn_scale"
    if model_type == "phi" and getattr(config, "qk_layernorm", False):
        return (
            "qk_layernorm applies a LayerNorm with a bias to q and k, so the logit is not bilinear in the head inputs "
            "up to per-token scalars"
        )
    if model_type == "gptj" and not getattr(config, "rotary_dim", None):
        return "rotary_dim is not set (GPT-J's rotary embedding then does not match the head size)"
    if model_type == "falcon" and getattr(config, "alibi", False):
        return _ALIBI
    if model_type == "stablelm" and getattr(config, "qk_layernorm", False):
        return "qk_layernorm applies per-head LayerNorms with biases to q and k, which are not folded here"
    if model_type == "cohere" and getattr(config, "use_qk_norm", False):
        return "use_qk_norm applies per-head LayerNorms (centred) to q and k, which are not folded here"
    if model_type == "gemma3_text" and getattr(config, "use_bidirectional_attention", False):
        return "use_bidirectional_attention (EmbeddingGemma) is not a causal decoder"
    return None


def check_supported(config: Any) -> ModelFamily:
    """The family of a HF config, or :class:`UnsupportedFamilyError` naming the family and why it is refused.

    Raises:
        UnsupportedFamilyError: an ALiBi or multimodal family, any architecture outside the verified table, a
            non-default RoPE scaling, or a verified family with an option that breaks the bilinear form.
    """
    model_type = str(getattr(config, "model_type", "") or "").lower()
    family = family_of(model_type)
    reason = _KNOWN_REFUSALS.get(model_type)
    if reason is None and family.loader is None:
        verified = ", ".join(sorted(BRIDGE_FAMILIES | set(TRANSFORMERS_FAMILIES)))
        reason = f"not a verified family (verified: {verified}); its attention logits are not checked against an oracle"
    reason = reason or _option_refusal(model_type, config) or _rope_refusal(config)
    if reason is not None:
        raise UnsupportedFamilyError(f"model family {model_type!r} is not supported: {reason}")
    return family
