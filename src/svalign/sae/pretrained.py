"""Published SAEs from a local directory, in the head-input coordinates the stage analyses.

A published SAE (SAELens: ``cfg.json`` + ``sae_weights.safetensors``; EleutherAI sparsify: ``cfg.json`` +
``sae.safetensors``) replaces the stage's own training for a site (config ``sae.pretrained``). Most read the residual
stream r entering the layer, while the stage decomposes the head input x, the same residual after the input norm
before its gain: per token r = a·x + c·1 (:func:`svalign.sae.dictionary.affine_inverse`). The SAE is carried into x
coordinates with the site's mean scale s = E[a] and shift c̄ = E[c] over the corpus windows (r ≈ s·x + c̄·1):

* decoder directions keep their direction (unit rows d_a / ‖d_a‖: the alignment is exact);
* activations become f_a·‖d_a‖ / s, so the encoder rows are scaled by ‖d_a‖ and its bias by ‖d_a‖ / s;
* the decoder bias becomes (b_dec − c̄·1) / s, and the encoder's input centring is folded into its bias.

The per-token scale varies around s, so the reconstruction in x coordinates is an approximation, measured like any
SAE's (explained variance on training, held-out and prompt tokens; loss recovered); the attribution stays exact
whatever the SAE, because the SAE's error is one of its components. An SAE already read at the head input
(``input: head_input``) is loaded as is (s = 1, c̄ = 0).

Architectures: ``topk`` (exact for unit-norm decoder rows, as TopK SAEs are trained; otherwise the latents are
ranked by f_a·‖d_a‖ instead of f_a) and ``standard`` (ReLU; exact when ``sae.k`` covers a token's active latents, else
its k largest are kept and the rest fall into the SAE's error, which the quality columns show). JumpReLU (Gemma
Scope) is refused: its thresholds have no TopK form here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from svalign.sae.dictionary import affine_inverse, read_sae

__all__ = ["PublishedSAE", "load_site", "published_sites", "read_published", "to_head_input", "weights_digest"]

log = logging.getLogger(__name__)


@dataclass
class PublishedSAE:
    """An SAE as published, in residual coordinates (rows per latent).

    Attributes:
        encoder: ``[n_latents, d_in]``; encoder_bias ``[n_latents]``; decoder ``[n_latents, d_in]`` (any row norms);
        b_dec: ``[d_in]``.
        centre_input: the encoder reads r − b_dec (else r).
        activation: ``topk`` or ``relu``; k: active latents (TopK), or the cap kept for ReLU.
        hook: the hook the SAE was trained on, as its cfg names it ("" when it does not say).
        digest: SHA-256 of the weights file.
    """

    encoder: torch.Tensor
    encoder_bias: torch.Tensor
    decoder: torch.Tensor
    b_dec: torch.Tensor
    centre_input: bool
    activation: str
    k: int
    hook: str
    digest: str


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {name: tensor.double() for name, tensor in load_file(str(path)).items()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_digest(directory: str | Path) -> str:
    """SHA-256 of an SAE directory's weights file (SAELens or sparsify), "" when there is none."""
    for name in ("sae_weights.safetensors", "sae.safetensors"):
        if (Path(directory) / name).is_file():
            return _digest(Path(directory) / name)
    return ""


def read_published(directory: str | Path, k_cap: int, key: str) -> PublishedSAE:
    """Read a SAELens or sparsify SAE directory (see the module docstring).

    Args:
        k_cap: the active latents kept for a ReLU SAE (``sae.k``).
        key: the config key naming the directory, for error messages.

    Raises:
        FileNotFoundError: no ``cfg.json`` with ``sae_weights.safetensors`` (SAELens) or ``sae.safetensors``
            (sparsify) in ``directory``.
        ValueError: an architecture this stage cannot analyse (JumpReLU, gated).
    """
    directory = Path(directory)
    cfg_path = directory / "cfg.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{key}: {directory} has no cfg.json (a SAELens or sparsify SAE directory)")
    cfg = json.loads(cfg_path.read_text())
    if (directory / "sae.safetensors").is_file():  # sparsify: TopK, unit decoder rows, encoder reads r − b_dec
        weights_path = directory / "sae.safetensors"
        t = _tensors(weights_path)
        digest = _digest(weights_path)
        return PublishedSAE(
            t["encoder.weight"], t["encoder.bias"], t["W_dec"], t["b_dec"], True, "topk", int(cfg["k"]), "", digest
        )
    weights_path = directory / "sae_weights.safetensors"
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"{key}: {directory} has cfg.json but neither sae_weights.safetensors (SAELens) nor sae.safetensors "
            "(sparsify)"
        )
    architecture = cfg.get("architecture", "standard")
    if architecture not in ("standard", "topk"):
        raise ValueError(
            f"{key}: {directory} is a {architecture!r} SAE; this stage analyses TopK and ReLU ('standard') SAEs only"
            " (a JumpReLU threshold has no TopK form)"
        )
    t = _tensors(weights_path)
    k = int(cfg.get("k") or cfg.get("activation_fn_kwargs", {}).get("k", 0)) if architecture == "topk" else k_cap
    return PublishedSAE(
        encoder=t["W_enc"].T.contiguous(),
        encoder_bias=t["b_enc"],
        decoder=t["W_dec"],
        b_dec=t["b_dec"],
        centre_input=bool(cfg.get("apply_b_dec_to_input", True)),
        activation="topk" if architecture == "topk" else "relu",
        k=k,
        hook=str(cfg.get("hook_name", "")),
        digest=_digest(weights_path),
    )


def to_head_input(sae: PublishedSAE, scale: float, shift: float) -> dict[str, Any]:
    """The SAE in head-input coordinates (r ≈ ``scale``·x + ``shift``·1) as a TopK coder's tensors.

    Returns:
        ``encoder`` ``[n, d]``, ``encoder_bias`` ``[n]``, ``decoder`` ``[n, d]`` (unit rows), ``b_dec`` ``[d]``
        (float32 arrays, as :func:`svalign.sae.dictionary.read_sae` takes them) and ``k``, such that a TopK
        SparseCoder over x with them reproduces the SAE's reconstruction of r = scale·x + shift·1, mapped back:
        x̂ = (r̂ − shift·1) / scale.
    """
    norms = sae.decoder.norm(dim=1).clamp_min(1e-30)  # [n]
    ones = torch.ones_like(sae.b_dec)
    b_x = (sae.b_dec - shift * ones) / scale  # the decoder bias in x coordinates
    centre = (sae.b_dec if sae.centre_input else torch.zeros_like(sae.b_dec)) - shift * ones
    # pre_r = W (r − β) + e = W (s x + c̄ − β) + e = s W (x − b_x) + [s W (b_x − (β − c̄)/s) + e]
    bias = sae.encoder @ (scale * b_x - centre) + sae.encoder_bias
    return {
        "encoder": (norms[:, None] * sae.encoder).float().numpy(),
        "encoder_bias": (norms * bias / scale).float().numpy(),
        "decoder": (sae.decoder / norms[:, None]).float().numpy(),
        "b_dec": b_x.float().numpy(),
        "k": sae.k,
    }


def published_sites(
    entries: Sequence[Mapping[str, Any]], model: str, layers: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """layer → its ``sae.pretrained`` entry (``input`` defaulted to ``residual``) for ``model``'s sites, from
    ``entries``; fails, naming the key, for an entry whose layer is not a site."""
    found = {}
    for entry in entries:
        if entry["model"] != model:
            continue
        if int(entry["layer"]) not in layers:
            raise ValueError(
                f"sae.pretrained: {model} layer {entry['layer']} is not one of its sites (sae.sites.{model}: "
                f"{list(layers)})"
            )
        found[int(entry["layer"])] = {"input": "residual", **entry}
    return found


def load_site(
    entry: Mapping[str, Any], x: torch.Tensor, residual: torch.Tensor | None, k_cap: int, keys: Mapping[str, Any]
) -> Any:
    """A published SAE as a TopK coder over the site's head inputs ``x``, carried there with the mean scale and
    shift of ``residual`` against ``x`` (both ``[tokens, d_model]``; no residual: the SAE reads x itself).

    Raises:
        ValueError: the SAE's width is not the site's, or it reads another hook than the residual entering the layer.
    """
    key = f"sae.pretrained ({keys['model']} layer {keys['layer']})"
    sae = read_published(entry["path"], k_cap, key)
    if sae.decoder.shape[1] != x.shape[1]:
        raise ValueError(f"{key}: the SAE reads {sae.decoder.shape[1]} dimensions, the site's input has {x.shape[1]}")
    expected = f"blocks.{keys['layer']}.hook_resid_pre"
    if entry["input"] == "residual" and sae.hook and not sae.hook.endswith(expected):
        raise ValueError(f"{key}: the SAE reads {sae.hook}, not the residual entering the layer ({expected})")
    scale, shift = 1.0, 0.0
    if residual is not None:
        a, c = affine_inverse(x.double(), residual.double())
        scale, shift = float(a.mean()), float(c.mean())
    log.info("%s: %s, %d latents, k %d; r ≈ %.3g·x + %.3g", key, entry["path"], len(sae.decoder), sae.k, scale, shift)
    t = to_head_input(sae, scale, shift)
    return read_sae(t["encoder"], t["encoder_bias"], t["decoder"], t["b_dec"], t["k"])
