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


def oracle_logits(model_dir: str | Path, tokens: torch.Tensor) -> list[OracleLayer]:
    """Per-layer pre-softmax logits of a local Hugging Face model directory on ``tokens`` ``[batch, pos]``."""
    from transformers import AttentionInterface, AutoModel
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

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
