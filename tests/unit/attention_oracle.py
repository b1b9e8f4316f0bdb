"""Independent oracle for attention logits: every head's pre-softmax logits from plain ``transformers``.

No transformer-lens and no svalign code is on this path. The model is loaded with ``AutoModel`` under an attention
implementation registered here (``svalign_oracle``) that records what the model's own attention module hands to
its attention function — query and key *after* rotary embedding, per-head q/k norms and any pre-scaling, the
``scaling`` factor, the soft-cap and the additive mask — and then runs the family's own ``eager_attention_forward``
(its masks are eager masks). From the records:

* ``logits[b, h, t, j] = (q_t · k_j) · scaling``, in float64: the **scaled** logit the model adds its mask to,
  before any soft-capping (Gemma 2). A pipeline that computes *unscaled* scores (before 1/√d_head) compares
  ``scores / attn_scale`` with these.
* ``allowed[b, t, j]``: the model's own mask (key j may be attended from query t), from the additive mask it passed
  (0 allowed, the dtype's minimum not; None: every key).

The oracle checks itself: ``softmax(cap(logits) + mask)`` must reproduce the attention weights that the model's
eager function returned (to 1e-5), so the logits are exactly what the model softmaxes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ORACLE", "OracleLayer", "oracle_logits"]

ORACLE = "svalign_oracle"
"""Name of the recording attention implementation registered with transformers."""


@dataclass
class OracleLayer:
    """One attention layer, as the model computed it.

    Attributes:
        logits: ``[batch, head, t, j]`` float64, (q · k) · scaling before soft-capping and masking (every pair).
        allowed: ``[batch, t, j]`` bool, the model's own mask.
        scaling: the factor the model multiplied q · k by (1.0 when q was scaled before, as in OPT).
        softcap: the attention-logit soft-cap (Gemma 2), or None.
        pattern: ``[batch, head, t, j]`` the attention weights the model's eager function returned.
    """

    logits: torch.Tensor
    allowed: torch.Tensor
    scaling: float
    softcap: float | None
    pattern: torch.Tensor


def _recording_attention(records: list[dict]):
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        eager = sys.modules[type(module).__module__].eager_attention_forward  # the family's own eager attention
        output, weights = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        records.append(
            {
                "query": query.detach(),
                "key": key.detach(),
                "mask": None if attention_mask is None else attention_mask.detach(),
                "scaling": query.shape[-1] ** -0.5 if scaling is None else float(scaling),
                "softcap": kwargs.get("softcap"),
                "weights": weights.detach(),
            }
        )
        return output, weights

    return attention


def _allowed(mask: torch.Tensor | None, batch: int, n_pos: int) -> torch.Tensor:
    if mask is None:
        return torch.ones(batch, n_pos, n_pos, dtype=torch.bool)
    mask = mask[:, 0, :, -n_pos:]  # [b, 1, t, j] -> [b, t, j]
    return mask if mask.dtype == torch.bool else mask == 0


def _layer(record: dict) -> OracleLayer:
    query, key = record["query"].double(), record["key"].double()  # [b, h, t, d], [b, h_kv, j, d]
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)  # HF repeat_kv: head h reads h // group
    logits = query @ key.mT * record["scaling"]
    allowed = _allowed(record["mask"], query.shape[0], query.shape[2])
    capped = logits if record["softcap"] is None else torch.tanh(logits / record["softcap"]) * record["softcap"]
    expected = torch.softmax(capped.masked_fill(~allowed[:, None], float("-inf")), -1)
    weights = record["weights"].double()
    if not torch.allclose(expected, weights, atol=1e-5, rtol=0):
        raise AssertionError(
            f"oracle logits do not reproduce the model's attention: {(expected - weights).abs().max()}"
        )
    return OracleLayer(logits, allowed, record["scaling"], record["softcap"], weights)


def _falcon_records(model_dir: str | Path, tokens: torch.Tensor) -> list[dict]:
    """Falcon computes its attention inside its module (no attention function to register): a pre-hook takes the
    module's inputs (hidden states, cos/sin, eager mask), q and k are rebuilt with the module's own
    ``query_key_value``, ``_split_heads`` and the file's ``apply_rotary_pos_emb``, and the weights come from
    ``output_attentions`` (so the self-check compares with what the model softmaxed)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", dtype=torch.float32).eval()
    module = sys.modules[type(model).__module__]
    records: list[dict] = []

    def record(attention, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        query, key, _ = attention._split_heads(attention.query_key_value(hidden))
        b, t = query.shape[:2]
        n_kv = attention.num_heads if attention.new_decoder_architecture else attention.num_kv_heads
        query = query.transpose(1, 2).reshape(b, attention.num_heads, t, attention.head_dim)
        key = key.transpose(1, 2).reshape(b, n_kv, t, attention.head_dim)
        cos, sin = kwargs["position_embeddings"]
        query, key = module.apply_rotary_pos_emb(query, key, cos, sin)
        mask = kwargs.get("attention_mask")
        scaling = 1 / attention.head_dim**0.5
        records.append({"query": query, "key": key, "mask": mask, "scaling": scaling, "softcap": None})

    layers = model.h
    handles = [layer.self_attention.register_forward_pre_hook(record, with_kwargs=True) for layer in layers]
    try:
        with torch.no_grad():
            out = model(input_ids=tokens, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    for entry, weights in zip(records, out.attentions, strict=True):
        entry["weights"] = weights.detach()
    return records


def oracle_logits(model_dir: str | Path, tokens: torch.Tensor) -> list[OracleLayer]:
    """Per-layer pre-softmax logits of a local Hugging Face model directory on ``tokens`` ``[batch, pos]``."""
    from transformers import AttentionInterface, AutoConfig, AutoModel
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if AutoConfig.from_pretrained(str(model_dir)).model_type == "falcon":
        return [_layer(record) for record in _falcon_records(model_dir, tokens)]
    records: list[dict] = []
    AttentionInterface.register(ORACLE, _recording_attention(records))
    AttentionMaskInterface.register(ORACLE, eager_mask)
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation=ORACLE, dtype=torch.float32).eval()
    with torch.no_grad():
        model(input_ids=tokens)
    n_layers = model.config.get_text_config().num_hidden_layers
    if len(records) != n_layers:
        raise AssertionError(f"recorded {len(records)} attention calls for {n_layers} layers")
    return [_layer(record) for record in records]
