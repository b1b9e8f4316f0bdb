"""Head inputs over the corpus and a TopK sparse autoencoder per site (EleutherAI's ``sparsify.SparseCoder``).

The SAE trains on exactly what the SVD and SAD stages decompose: the output of the model's head-input hook
(:attr:`svalign.models.HeadWeights.head_input_hook`, after norm folding), on windows of the offline corpus
(:mod:`svalign.sae.corpus`). Training follows sparsify's recipe (Gao et al. 2024): b_dec starts at the data mean,
the decoder rows stay unit-norm (gradient parallel to them removed, renormalised after each step), the loss is the
fraction of variance unexplained plus α·AuxK over latents that have not fired for a while. The loop is ours
because the activations are ours (sparsify's trainer reads an ``nn.Module``'s output, not a folded hook).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from svalign.runtime import TrainingDivergedError, derive_seed
from svalign.sae.config import SAEConfig

__all__ = [
    "SiteSAE",
    "affine_inverse",
    "collect_head_inputs",
    "corpus_windows",
    "dictionary_columns",
    "encode",
    "interference_norm",
    "loss_recovered",
    "read_sae",
    "sae_quality",
    "train_sae",
]

log = logging.getLogger(__name__)


def _sparsify() -> Any:
    """``sparsify`` (imported on use: it prints a note on import and pulls in its trainer)."""
    import sparsify

    return sparsify


# --------------------------------------------------------------------------------------------------
# Corpus windows and head inputs
# --------------------------------------------------------------------------------------------------


def corpus_windows(
    tokenizer: Any,
    texts: Sequence[str],
    causal: bool,
    context_len: int,
    n_windows: int,
    seed: int,
    sampled: tuple[int, float] | None = None,
) -> tuple[torch.Tensor, np.ndarray, int]:
    """``n_windows`` non-overlapping windows of the tokenised corpus stream, drawn at random (seeded).

    ``sampled``: (index of the first sampled-text document in ``texts``, share of the windows to draw from the
    sampled text): the windows are then drawn from the two parts of the stream in that proportion (a window
    straddling the boundary counts as docstrings), so a small sampled corpus is not drowned by a large one.

    Documents are tokenised without special tokens and joined (a blank line between them for causal models,
    [SEP] for encoders), as in language-model packing. Causal models read windows without BOS, as SAD's prompts
    do; encoders get their usual [CLS] … [SEP] around each window.

    Returns:
        (tokens ``[n_windows, context_len]``, each window's start offset in the stream ``[n_windows]``, the stream's
        length in tokens: the corpus size for this tokenizer).

    Raises:
        ValueError: the corpus holds fewer windows than asked for (naming ``sae.n_tokens``).
    """
    prefix, suffix = ([], []) if causal else _special_tokens(tokenizer)
    body = context_len - len(prefix) - len(suffix)
    if body < 2:
        raise ValueError(f"sae.context_len = {context_len} leaves no room for text beside the special tokens")
    separator = tokenizer("\n\n", add_special_tokens=False)["input_ids"] if causal else [tokenizer.sep_token_id]
    stream, boundary = _token_stream(tokenizer, texts, separator, None if sampled is None else sampled[0])
    cells = np.arange(len(stream) // body)
    rng = np.random.default_rng(derive_seed(seed, "sae windows"))
    if boundary is None:
        chosen = _draw_cells(rng, cells, n_windows, context_len, "the corpus")
    else:
        n_sampled = round(n_windows * sampled[1])
        in_sampled = cells * body >= boundary
        chosen = rng.permutation(
            np.concatenate(
                [
                    _draw_cells(rng, cells[~in_sampled], n_windows - n_sampled, context_len, "the docstrings"),
                    _draw_cells(rng, cells[in_sampled], n_sampled, context_len, "the sampled text"),
                ]
            )
        )
    starts = chosen * body
    ids = torch.tensor(stream, dtype=torch.long)
    windows = ids[torch.from_numpy(starts)[:, None] + torch.arange(body)]
    if prefix or suffix:
        n = len(windows)
        windows = torch.cat(
            [torch.tensor([prefix] * n).view(n, -1), windows, torch.tensor([suffix] * n).view(n, -1)], 1
        )
    return windows, starts, len(stream)


def _token_stream(
    tokenizer: Any, texts: Sequence[str], separator: list[int], first_sampled: int | None
) -> tuple[list[int], int | None]:
    """The documents' tokens joined by ``separator``, and where document ``first_sampled`` starts (None: none)."""
    stream: list[int] = []
    boundary = None
    for index, ids in enumerate(tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]):
        if index == first_sampled:
            boundary = len(stream)
        stream.extend(ids)
        stream.extend(separator)
    return stream, boundary


def _draw_cells(rng: np.random.Generator, cells: np.ndarray, count: int, context_len: int, what: str) -> np.ndarray:
    """``count`` of the window cells ``cells``, drawn without replacement; fails, naming the keys, when too few."""
    if len(cells) < count:
        raise ValueError(
            f"{what} gives {len(cells)} windows of {context_len} tokens for this tokenizer, fewer than the {count} "
            "that sae.n_tokens asks of it: lower sae.n_tokens or sae.context_len, or enlarge the corpus "
            "(sae.sampled_text)"
        )
    return rng.permutation(cells)[:count]


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids an encoder's tokenizer puts before and after a text ([CLS] and [SEP] for BERT)."""
    plain = tokenizer("text", add_special_tokens=False)["input_ids"]
    full = tokenizer("text", add_special_tokens=True)["input_ids"]
    start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    return full[:start], full[start + len(plain) :]


class _StopForwardError(Exception):
    """Raised by the last hook: the layers above the sites are never computed."""


def collect_head_inputs(
    bridge: Any,
    tokens: torch.Tensor,
    hooks: dict[Any, str],
    batch_sequences: int,
    progress_file: Any = None,
    stop_after: str | None = None,
) -> dict[Any, torch.Tensor]:
    """The output of each hook over ``tokens`` ``[n, pos]``: key → ``[n · pos, d_model]`` (``hooks``: key → hook
    name; by default layer → its head-input hook).

    The forward pass stops after ``stop_after`` (default: the hook of the largest key), raising out of the hook, so a
    mid-layer site of a deep model costs half a forward pass.
    """
    last = stop_after if stop_after is not None else hooks[max(hooks)]
    gathered: dict[Any, list[torch.Tensor]] = {key: [] for key in hooks}
    layer_of = {name: layer for layer, name in hooks.items()}

    def grab(activation: torch.Tensor, hook: Any) -> None:
        gathered[layer_of[hook.name]].append(activation.detach().float().flatten(0, 1).cpu())
        if hook.name == last:
            raise _StopForwardError

    batches = torch.split(tokens, batch_sequences)
    for batch in tqdm(batches, file=progress_file, mininterval=5.0, desc="head inputs"):
        try:
            with torch.no_grad():
                bridge.run_with_hooks(batch, fwd_hooks=[(name, grab) for name in hooks.values()])
        except _StopForwardError:
            pass
    return {layer: torch.cat(parts) for layer, parts in gathered.items()}


# --------------------------------------------------------------------------------------------------
# Training and quality
# --------------------------------------------------------------------------------------------------


@dataclass
class SiteSAE:
    """A trained SAE of one site with what its tables record.

    Attributes:
        sae: the ``sparsify.SparseCoder`` (TopK, unit-norm decoder rows ``W_dec [n_latents, d_model]``).
        final_loss: FVU + α·AuxK of the last step.
    """

    sae: Any
    final_loss: float


def _learning_rate(step: int, steps: int) -> float:
    """Multiplier: linear warm-up over the first 5 % of steps, constant, linear decay over the last 20 %."""
    warmup, decay_from = max(1, steps // 20), int(0.8 * steps)
    if step < warmup:
        return (step + 1) / warmup
    if step >= decay_from:
        return max(0.0, (steps - step) / max(1, steps - decay_from))
    return 1.0


def train_sae(
    activations: torch.Tensor, config: SAEConfig, site: str, device: torch.device, progress_file: Any = None
) -> SiteSAE:
    """Train a TopK SAE on ``activations`` ``[n_tokens, d_model]`` (sparsify's recipe; see the module docstring).

    Raises:
        TrainingDivergedError: a non-finite loss (naming the site and step).
    """
    sparsify = _sparsify()
    n_tokens, d_model = activations.shape
    torch.manual_seed(derive_seed(config.seed, f"sae init {site}"))
    coder_config = sparsify.SparseCoderConfig(activation="topk", expansion_factor=config.expansion_factor, k=config.k)
    sae = sparsify.SparseCoder(d_model, coder_config, device=device, dtype=torch.float32)
    data = activations.to(device)
    with torch.no_grad():
        sae.b_dec.copy_(data.mean(0))
    lr = config.lr if config.lr is not None else 2e-4 / math.sqrt(sae.num_latents / 2**14)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate(step, config.steps))
    order = torch.Generator().manual_seed(derive_seed(config.seed, f"sae batches {site}"))
    since_fired = torch.zeros(sae.num_latents, dtype=torch.long, device=device)
    queue = torch.empty(0, dtype=torch.long)
    loss = torch.tensor(float("nan"))
    for step in tqdm(range(config.steps), file=progress_file, mininterval=5.0, desc=f"SAE {site}"):
        if len(queue) < config.batch_size:  # epochs of a fresh permutation each
            queue = torch.cat([queue, torch.randperm(n_tokens, generator=order)])
        batch, queue = data[queue[: config.batch_size].to(device)], queue[config.batch_size :]
        out = sae(batch, dead_mask=since_fired > config.dead_after_tokens)
        loss = out.fvu + config.auxk_alpha * out.auxk_loss
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"SAE of {site}: loss {float(loss)} at step {step}; lower sae.lr")
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        sae.set_decoder_norm_to_unit_norm()
        since_fired += len(batch)
        since_fired[out.latent_indices[out.latent_acts > 0]] = 0
    return SiteSAE(sae.eval(), float(loss.detach()))


def encode(sae: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k activations and latent indices of ``x`` ``[..., d_model]``: two ``[..., k]`` tensors."""
    with torch.no_grad():
        acts, indices, _ = sae.encode(x.reshape(-1, x.shape[-1]))
    return acts.reshape(*x.shape[:-1], -1), indices.reshape(*x.shape[:-1], -1)


def sae_quality(sae: Any, activations: torch.Tensor, chunk: int = 8192) -> dict[str, Any]:
    """Explained variance, L0, dead fraction and per-latent frequency ``[n_latents]`` on ``activations``."""
    squared_error = 0.0
    counts = torch.zeros(sae.num_latents, dtype=torch.float64)
    active = 0
    with torch.no_grad():
        for x in torch.split(activations.to(sae.device), chunk):
            acts, indices = encode(sae, x)
            squared_error += float((x - sae.decode(acts, indices)).pow(2).sum())
            fired = acts > 0
            active += int(fired.sum())
            counts += torch.bincount(indices[fired].cpu(), minlength=sae.num_latents).double()
    total = float((activations - activations.mean(0)).pow(2).sum())
    n = len(activations)
    return {
        "explained_variance": 1.0 - squared_error / total,
        "l0": active / n,
        "dead_fraction": float((counts == 0).double().mean()),
        "frequency": (counts / n).numpy(),
    }


def _next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of each next token (float64) from ``logits`` ``[b, pos, vocab]``."""
    flat = logits[:, :-1].flatten(0, 1).double()
    return torch.nn.functional.cross_entropy(flat, tokens[:, 1:].flatten(), reduction="sum")


def affine_inverse(normalized: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token (a, c) with ``residual = a · normalized + c · 1``, both ``[..., 1]``: exact for the norms the head
    input is taken after (RMSNorm: c = 0, a = RMS; LayerNorm: a = std, c = mean), fitted by least squares."""
    n_centred = normalized - normalized.mean(-1, keepdim=True)
    r_centred = residual - residual.mean(-1, keepdim=True)
    scale = (n_centred * r_centred).sum(-1, keepdim=True) / n_centred.pow(2).sum(-1, keepdim=True).clamp_min(1e-30)
    return scale, residual.mean(-1, keepdim=True) - scale * normalized.mean(-1, keepdim=True)


def loss_recovered(
    bridge: Any, tokens: torch.Tensor, hooks: tuple[str, str], sae: Any, mean: torch.Tensor, batch_sequences: int
) -> dict[str, float]:
    """The language-model loss recovered when the SAE's reconstruction is spliced into the model (the field's test
    of an SAE), on ``tokens`` ``[n, pos]`` of a causal pre-norm model.

    ``hooks``: (the residual stream entering the site's layer, the head input: that residual after the input norm,
    before its gain). The SAE reads the normalised residual, so the splice maps its reconstruction x̂ back through
    the token's own normalisation: the residual r = a·x + c·1 (:func:`affine_inverse`) is replaced by a·x̂ + c·1,
    and everything downstream (this layer's attention and MLP, every later layer) reads it. The ablation replaces it
    by a·μ + c·1, μ ``mean`` ``[d_model]`` the head input's mean over the training tokens: each token keeps its
    scale and loses its direction. With L the mean next-token cross-entropy of each pass, the recovered share is
    (L_ablated − L_SAE) / (L_ablated − L_clean): 1 when the reconstruction loses nothing the model uses, 0 when it
    is no better than the mean.

    Returns:
        ``loss_clean``, ``loss_sae``, ``loss_ablated`` (nats per token) and ``loss_recovered``.
    """
    residual_hook, input_hook = hooks
    totals = {"clean": 0.0, "sae": 0.0, "ablated": 0.0}
    with torch.no_grad():
        for batch in torch.split(tokens, batch_sequences):
            seen: dict[str, torch.Tensor] = {}

            def grab(activation: torch.Tensor, hook: Any, seen: dict = seen) -> None:
                seen[hook.name] = activation.detach()

            logits = bridge.run_with_hooks(batch, fwd_hooks=[(residual_hook, grab), (input_hook, grab)])
            totals["clean"] += float(_next_token_loss(logits, batch))
            residual, normalized = seen[residual_hook], seen[input_hook].float()
            scale, shift = affine_inverse(normalized.double(), residual.double())
            acts, indices = encode(sae, normalized.reshape(-1, normalized.shape[-1]))
            replacements = {
                "sae": sae.decode(acts, indices).reshape(normalized.shape).double(),
                "ablated": mean.double().expand_as(normalized),
            }
            for name, replacement in replacements.items():
                spliced = (scale * replacement + shift).to(residual.dtype)
                logits = bridge.run_with_hooks(batch, fwd_hooks=[(residual_hook, lambda _a, hook, s=spliced: s)])
                totals[name] += float(_next_token_loss(logits, batch))
    n = tokens.shape[0] * (tokens.shape[1] - 1)
    losses = {f"loss_{name}": total / n for name, total in totals.items()}
    gap = losses["loss_ablated"] - losses["loss_clean"]
    losses["loss_recovered"] = (losses["loss_ablated"] - losses["loss_sae"]) / gap if gap > 0 else math.nan
    return losses


def interference_norm(decoder: torch.Tensor) -> float:
    """‖DᵀD − I‖₂ (the paper's ‖E_X‖₂) of the unit-normalised rows of ``decoder`` ``[n_latents, d_model]``.

    The Gram matrix's eigenvalues are the squared singular values of the rows (and 0 when n_latents > d_model),
    so the norm needs only ``svdvals``, never the ``[n, n]`` Gram.
    """
    rows = decoder.double() / decoder.double().norm(dim=1, keepdim=True)
    squared = torch.linalg.svdvals(rows).pow(2)
    smallest = 0.0 if len(rows) > rows.shape[1] else float(squared.min())
    return max(float(squared.max()) - 1.0, 1.0 - smallest)


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def dictionary_columns(sae: Any, model: str, layer: int, frequency: np.ndarray) -> dict[str, Any]:
    """Column data for :data:`svalign.tables.SAE_DICTIONARY` (one site)."""
    n = sae.num_latents
    return {
        "model": [model] * n,
        "layer": np.full(n, layer),
        "latent": np.arange(n),
        "encoder": sae.encoder.weight.detach().cpu().numpy(),
        "encoder_bias": sae.encoder.bias.detach().cpu().numpy(),
        "decoder": sae.W_dec.detach().cpu().numpy(),
        "frequency": frequency,
    }


def read_sae(encoder: np.ndarray, encoder_bias: np.ndarray, decoder: np.ndarray, b_dec: np.ndarray, k: int) -> Any:
    """A ``SparseCoder`` from one site's stored tensors (``[n_latents, d_model]`` rows, ``[d_model]`` b_dec)."""
    sparsify = _sparsify()
    n_latents, d_model = decoder.shape
    coder_config = sparsify.SparseCoderConfig(activation="topk", num_latents=n_latents, k=k)
    sae = sparsify.SparseCoder(d_model, coder_config, dtype=torch.float32)
    with torch.no_grad():
        sae.encoder.weight.copy_(torch.from_numpy(np.array(encoder, dtype=np.float32)))
        sae.encoder.bias.copy_(torch.from_numpy(np.array(encoder_bias, dtype=np.float32)))
        sae.W_dec.copy_(torch.from_numpy(np.array(decoder, dtype=np.float32)))
        sae.b_dec.copy_(torch.from_numpy(np.array(b_dec, dtype=np.float32)))
    return sae.eval()
