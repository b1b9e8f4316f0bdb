"""Singular vectors against SAE decoder directions: best |cos| per singular vector, against a Haar-frame null.

For every head at a site, the singular vectors u_k, v_k of its QK form (offset δ = 0 under RoPE) are compared with
every decoder direction d_a of the site's SAE: ``best_cos(u_k) = max_a |cos(u_k, d̃_a)|`` with ``d̃_a = [d_a, 0]``
when the SVD is over bias-augmented inputs (the decoder never writes the constant coordinate). A head's statistic
is the mean best |cos| over u_1..u_n and v_1..v_n (n = ``sae.top_singular``).

Three nulls (:mod:`svalign.nulls`), each ``null_draws`` frames of r columns per side whose r / n disjoint groups
of n columns give one null statistic each:

* ``haar``, the paper's spectrum-preserving rotation U → Q_U U: its columns form a Haar-random orthonormal frame
  whatever U was, so it does not depend on the head and is drawn once per site;
* ``subspace``: random orthonormal frames inside the head's own row and column spaces (per head): does the SVD
  basis beat other bases of the subspace the head reads?
* ``covariance``: frames of directions drawn from N(0, M), M the second moment of the site's corpus head inputs
  (once per site): random directions where the data has energy, which is where any dictionary's directions sit.

Per head a Monte Carlo p-value under each null, both tails (:func:`monte_carlo_p`). The **fake-dictionary
control** reruns the Haar-null test with dictionaries of the same size whose directions are drawn from N(0, M)
(:func:`fake_dictionaries`): a dictionary without features, whose aligned share is the baseline to beat.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from svalign.definitions import NULLS
from svalign.nulls import (
    covariance_frames,
    gaussian_directions,
    moment_root,
    random_frames,
    rotate_within,
    seed_stream,
)
from svalign.svd import ModelSVD

__all__ = [
    "SiteAlignment",
    "alignment_columns",
    "best_cos",
    "control_stream",
    "covariance_null",
    "fake_dictionaries",
    "fake_test",
    "frame_statistic",
    "grouped_statistic",
    "haar_frames",
    "monte_carlo_p",
    "null_best_cos",
    "position_basis",
    "positional_share",
    "site_alignment",
    "subspace_null",
    "unit_directions",
    "without_position",
]

_CHUNK_DRAWS = 8


def unit_directions(decoder: torch.Tensor, d_input: int) -> torch.Tensor:
    """Unit decoder rows ``[n_latents, d_input]``, zero-padded on the bias coordinate of augmented inputs."""
    rows = decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.nn.functional.pad(rows, (0, d_input - rows.shape[1]))


def best_cos(directions: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """max_a |cos| of each column of ``vectors`` ``[..., d, r]`` (unit columns) with ``directions`` ``[n, d]``.

    Returns:
        (best |cos| ``[..., r]``, the latent attaining it ``[..., r]``).
    """
    cos = (directions @ vectors).abs()  # [..., n, r]
    best, latent = cos.max(dim=-2)
    return best, latent


def haar_frames(draws: int, d: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """``[draws, d, r]`` Haar-random orthonormal frames in float32 (:func:`svalign.nulls.random_frames`)."""
    return random_frames((draws,), d, r, generator).float()


def null_best_cos(directions: torch.Tensor, draws: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """best |cos| of the columns of ``draws`` Haar frames with ``directions`` ``[n, d]``: ``[draws, r]``."""
    parts = []
    for start in range(0, draws, _CHUNK_DRAWS):
        frames = haar_frames(min(_CHUNK_DRAWS, draws - start), directions.shape[1], r, generator)
        parts.append(best_cos(directions, frames.to(directions.device))[0].cpu())
    return torch.cat(parts)


def grouped_statistic(best_u: torch.Tensor, best_v: torch.Tensor, n: int) -> torch.Tensor:
    """Mean best |cos| over disjoint groups of n columns of both sides: ``[..., r]`` each → ``[..., r // n]``."""
    groups = best_u.shape[-1] // n
    both = torch.stack([best_u[..., : groups * n], best_v[..., : groups * n]], -1)  # [..., groups·n, 2]
    return both.unflatten(-2, (groups, n)).mean(dim=(-2, -1))


@dataclass
class SiteAlignment:
    """One site's alignment, real heads and null.

    Attributes:
        best: side → ``[head, r]`` best |cos| of u_k (``"u"``) or v_k (``"v"``); latent: side → ``[head, r]``.
        sigma: ``[head, r]`` σ_k at offset 0.
        statistic: ``[head]`` mean best |cos| of the top-n singular vectors of both sides.
        null_best: ``[2 · draws, r]`` best |cos| of the Haar null frames' columns (both sides pooled).
        null_statistic: ``[samples]`` the statistic of the Haar null's column groups.
        nulls: null → its statistics: ``[samples]`` shared by the heads (haar, covariance) or ``[head, samples]``
            (subspace); the nulls computed (the covariance null needs the inputs' second moment).
        fake_statistic: ``[fakes, head]`` each head's statistic under each fake dictionary.
        fake_aligned: ``[fakes, head]`` whether the head is aligned beyond that fake dictionary's own Haar null.
        positional_share: ``[head]`` energy share of the top singular vectors in the positional subspace (NaN: no
            subspace given); statistic_without_position ``[head]`` and null_without_position ``[samples]``: the
            statistic and its Haar null with the positional subspace projected out of every vector and direction.
    """

    best: dict[str, torch.Tensor]
    latent: dict[str, torch.Tensor]
    sigma: torch.Tensor
    statistic: torch.Tensor
    null_best: torch.Tensor
    null_statistic: torch.Tensor
    nulls: dict[str, torch.Tensor] = field(default_factory=dict)
    fake_statistic: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # no control: no fake
    fake_aligned: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    positional_share: torch.Tensor | None = None
    statistic_without_position: torch.Tensor | None = None
    null_without_position: torch.Tensor | None = None


def site_alignment(
    model_svd: ModelSVD,
    layer: int,
    decoder: torch.Tensor,
    top_singular: int,
    null_draws: int,
    null_seed: int,
    moment: torch.Tensor | None = None,
    n_fakes: int = 0,
    null_quantile: float = 0.99,
    position: torch.Tensor | None = None,
) -> SiteAlignment:
    """Alignment of every head of ``layer`` with the unit rows of ``decoder`` ``[n_latents, d_model]``, under each
    null, and the fake-dictionary control.

    Args:
        moment: ``[d_model, d_model]`` the site's head-input second moment (the covariance null and the fake
            dictionaries draw from it; None: neither runs).
        n_fakes: fake dictionaries of the decoder's size; null_quantile: the aligned criterion's Haar quantile.
        position: ``[d_model, p]`` the site's positional subspace (:func:`position_basis`), or None.

    Raises:
        ValueError: ``top_singular`` above the heads' rank.
    """
    svd = model_svd.svd
    rank = svd.S.shape[-1]
    if top_singular > rank:
        raise ValueError(f"sae.top_singular = {top_singular} exceeds the heads' rank {rank}")
    directions = unit_directions(decoder.float(), svd.basis_q.shape[-2])
    sides = ((svd.basis_q, svd.core_u), (svd.basis_k, svd.core_v))
    at_zero = [basis[layer] @ core[layer, :, 0] for basis, core in sides]  # [head, d_in, r] at offset 0
    (best_u, latent_u), (best_v, latent_v) = (best_cos(directions, vectors) for vectors in at_zero)
    best, latent = {"u": best_u, "v": best_v}, {"u": latent_u, "v": latent_v}
    generator = torch.Generator().manual_seed(null_seed)  # the Haar null first: its draws are every earlier run's
    null_u, null_v = (null_best_cos(directions, null_draws, rank, generator) for _ in range(2))
    null_statistic = grouped_statistic(null_u, null_v, top_singular).flatten()
    statistic = grouped_statistic(best["u"], best["v"], top_singular)[:, 0]
    nulls = {"haar": null_statistic}
    bases = (svd.basis_q[layer], svd.basis_k[layer])
    nulls["subspace"] = subspace_null(
        directions, bases, null_draws, top_singular, control_stream(null_seed, "subspace")
    )
    result = SiteAlignment(
        best=best,
        latent=latent,
        sigma=svd.S[layer, :, 0],
        statistic=statistic,
        null_best=torch.cat([null_u, null_v]),
        null_statistic=null_statistic,
        nulls=nulls,
    )
    options = (null_draws, top_singular, null_quantile, null_seed)
    if moment is not None:  # the null and the control that draw from the data
        _data_controls(result, directions, at_zero, moment_root(moment), len(decoder), n_fakes, *options)
    if position is not None:
        result.positional_share = positional_share(at_zero, position, top_singular)
        result.statistic_without_position, result.null_without_position = _without_position_test(
            directions, at_zero, position, null_draws, top_singular, control_stream(null_seed, "position")
        )
    return result


def _data_controls(
    result: SiteAlignment,
    directions: torch.Tensor,
    vectors: list[torch.Tensor],
    root: torch.Tensor,
    n_latents: int,
    n_fakes: int,
    draws: int,
    n: int,
    quantile: float,
    seed: int,
) -> None:
    """Add the covariance null and the fake-dictionary control to ``result`` (``root``: the second moment's)."""
    rank = vectors[0].shape[-1]
    result.nulls["covariance"] = covariance_null(directions, root, draws, rank, n, control_stream(seed, "covariance"))
    if n_fakes:
        options = (draws, n, quantile, control_stream(seed, "fake"))
        result.fake_statistic, result.fake_aligned = _fake_control(root, n_latents, n_fakes, vectors, *options)


def _without_position_test(
    directions: torch.Tensor,
    vectors: list[torch.Tensor],
    position: torch.Tensor,
    draws: int,
    n: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistic ``[head]`` and its Haar null ``[samples]`` with the positional subspace projected out of the
    decoder directions, the singular vectors and the null frames alike."""
    rows = without_position(directions, position)
    projected = [without_position(side.mT, position).mT for side in vectors]
    statistic = frame_statistic(rows, *projected, n)[:, 0]
    rank, d_in = vectors[0].shape[-1], directions.shape[1]
    frames = [
        without_position(haar_frames(draws, d_in, rank, generator).mT, position).mT for _ in range(2)
    ]  # [draws, d_in, r] per side: Haar columns with their positional part removed (not renormalised)
    return statistic, frame_statistic(rows, *frames, n).flatten()


def _fake_control(
    root: torch.Tensor,
    n_latents: int,
    n_fakes: int,
    vectors: list[torch.Tensor],
    draws: int,
    n: int,
    quantile: float,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Every fake dictionary's test (:func:`fake_test`): statistics and aligned flags, each ``[fakes, head]``."""
    tests = [
        fake_test(unit_directions(fake, vectors[0].shape[-2]), vectors, draws, n, quantile, generator)
        for fake in fake_dictionaries(root, n_latents, n_fakes, generator)
    ]
    return np.stack([statistic for statistic, _ in tests]), np.stack([aligned for _, aligned in tests])


def control_stream(seed: int, name: str) -> torch.Generator:
    """An independent generator per null and control of the stage (the Haar null keeps the seed itself)."""
    return seed_stream(seed, (*NULLS, "fake", "position", "attribution").index(name))


# --------------------------------------------------------------------------------------------------
# Nulls that respect the data, and the fake-dictionary control
# --------------------------------------------------------------------------------------------------


def frame_statistic(directions: torch.Tensor, frames_u: torch.Tensor, frames_v: torch.Tensor, n: int) -> torch.Tensor:
    """The head statistic of random frames: mean best |cos| over disjoint groups of n columns of both sides.

    Args:
        directions: unit decoder rows ``[latents, d_in]``; frames_u, frames_v: ``[..., d_in, r]`` orthonormal.

    Returns:
        ``[..., r // n]`` one null statistic per column group.
    """
    return grouped_statistic(best_cos(directions, frames_u)[0], best_cos(directions, frames_v)[0], n)


def subspace_null(
    directions: torch.Tensor, bases: tuple[torch.Tensor, torch.Tensor], draws: int, n: int, generator: torch.Generator
) -> torch.Tensor:
    """Per head, the statistic of random orthonormal frames *inside* the head's own row and column spaces.

    Args:
        bases: the layer's ``basis_q``, ``basis_k`` ``[head, d_in, r]``.

    Returns:
        ``[head, draws · (r // n)]`` null statistics of each head.
    """
    parts = []
    for start in range(0, draws, _CHUNK_DRAWS):
        chunk = min(_CHUNK_DRAWS, draws - start)
        frames = [rotate_within(basis.double().expand(chunk, *basis.shape), generator).float() for basis in bases]
        parts.append(frame_statistic(directions, *frames, n))  # [chunk, head, groups]
    return torch.cat(parts).permute(1, 0, 2).flatten(1)


def covariance_null(
    directions: torch.Tensor, root: torch.Tensor, draws: int, r: int, n: int, generator: torch.Generator
) -> torch.Tensor:
    """The statistic of frames of directions drawn from N(0, M) (``root``: the :func:`svalign.nulls.moment_root` of
    the site's head-input second moment, d_model), zero on the bias coordinate of augmented inputs as the decoder
    is: ``[draws · (r // n)]``."""
    d_in = directions.shape[1]
    parts = []
    for start in range(0, draws, _CHUNK_DRAWS):
        chunk = min(_CHUNK_DRAWS, draws - start)
        frames = [
            torch.nn.functional.pad(
                covariance_frames(root, (chunk, r), generator), (0, 0, 0, d_in - root.shape[0])
            ).float()
            for _ in range(2)
        ]
        parts.append(frame_statistic(directions, *frames, n))
    return torch.cat(parts).flatten()


def position_basis(x: torch.Tensor, context_len: int, rank: int) -> torch.Tensor:
    """The positional subspace of a site: the top ``rank`` principal directions ``[d, rank]`` (float64; zero
    columns beyond the positions' own rank) of the per-position mean of the head inputs ``x [windows · pos, d]``
    (windows of ``context_len`` tokens, in order)."""
    means = x.reshape(-1, context_len, x.shape[-1]).double().mean(0)  # [pos, d]
    _, _, vh = torch.linalg.svd(means - means.mean(0), full_matrices=False)
    basis = torch.zeros(x.shape[-1], rank, dtype=torch.float64)
    kept = min(rank, vh.shape[0] - 1)  # centred means of pos positions span at most pos − 1 directions
    basis[:, :kept] = vh[:kept].T
    return basis


def positional_share(vectors: list[torch.Tensor], basis: torch.Tensor, n: int) -> torch.Tensor:
    """Each head's mean share of energy of u_1..u_n and v_1..v_n in the positional subspace ``basis [d_model, p]``
    (``vectors``: u and v ``[head, d_in, r]``; a bias coordinate of augmented inputs counts outside): ``[head]``."""
    shares = []
    for side in vectors:
        top = side[..., :n].double()
        inside = (basis.T @ top[:, : basis.shape[0]]).square().sum(-2)  # [head, n]
        shares.append(inside / top.square().sum(-2).clamp_min(1e-30))
    return torch.cat(shares, -1).mean(-1)


def without_position(rows: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Unit ``rows [..., d_in]`` with their component in the positional subspace removed, *not* renormalised: the
    product of two such rows is the overlap of their non-positional parts, so a vector that lives in the positional
    subspace overlaps nothing (renormalising would blow up its leftover estimation error into a direction that
    another such vector shares)."""
    d, basis = basis.shape[0], basis.double()
    model_part = rows[..., :d].double()
    model_part = model_part - (model_part @ basis) @ basis.T
    return torch.cat([model_part, rows[..., d:].double()], -1).to(rows.dtype)


def monte_carlo_p(statistic: torch.Tensor, null: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo p-values of each head's statistic ``[head]`` under null samples ``[samples]`` (shared) or
    ``[head, samples]`` (per head): (p of a statistic this high, p of one this low), (1 + count) / (1 + samples)."""
    statistic = statistic.double().unsqueeze(-1)
    null = null.double().expand(statistic.shape[0], -1) if null.dim() == 1 else null.double()
    samples = null.shape[-1]
    high = ((null >= statistic).sum(-1) + 1) / (samples + 1)
    low = ((null <= statistic).sum(-1) + 1) / (samples + 1)
    return high.numpy(), low.numpy()


def fake_dictionaries(
    root: torch.Tensor, n_latents: int, count: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """``count`` dictionaries without features, each ``n_latents`` directions ``[n, d]`` drawn from N(0, M) (``root``:
    M's :func:`svalign.nulls.moment_root`): the size and the data geometry of a dictionary, no learned feature."""
    for _ in range(count):
        yield gaussian_directions(root, n_latents, generator).T.float()


def fake_test(
    directions: torch.Tensor,
    vectors: list[torch.Tensor],
    draws: int,
    n: int,
    quantile: float,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole Haar-null test rerun with ``directions`` (unit rows ``[latents, d_in]``) as the dictionary
    (``vectors``: the heads' u and v ``[head, d_in, r]`` at offset 0).

    Returns:
        (each head's statistic ``[head]``, whether it is aligned beyond this dictionary's own Haar null ``[head]``).
    """
    rank = vectors[0].shape[-1]
    statistic = frame_statistic(directions, *vectors, n)[:, 0]
    null = grouped_statistic(
        null_best_cos(directions, draws, rank, generator), null_best_cos(directions, draws, rank, generator), n
    ).flatten()
    upper = torch.quantile(null.double(), quantile).float()
    return statistic.double().numpy(), (statistic > upper).numpy()


def alignment_columns(
    result: SiteAlignment, keys: dict[str, Any], frequency: np.ndarray, null_quantile: float
) -> dict[str, Any]:
    """Column data for :data:`svalign.tables.SAE_ALIGNMENT`: rows by (head, side, rank) of one site/variant.

    ``keys``: ``{"model", "variant", "layer"}``.
    """
    n_heads, rank = result.sigma.shape
    null_pooled = result.null_best.flatten().double()
    null_mean, null_top = float(null_pooled.mean()), float(torch.quantile(null_pooled, null_quantile))
    rows = n_heads * 2 * rank
    best = torch.stack([result.best["u"], result.best["v"]], 1).flatten().double().numpy()
    latent = torch.stack([result.latent["u"], result.latent["v"]], 1).flatten().numpy()
    return {
        "model": [keys["model"]] * rows,
        "variant": [keys["variant"]] * rows,
        "layer": np.full(rows, keys["layer"]),
        "head": np.repeat(np.arange(n_heads), 2 * rank),
        "side": np.tile(np.repeat(["u", "v"], rank), n_heads).tolist(),
        "rank": np.tile(np.arange(rank), 2 * n_heads),
        "sigma": result.sigma.double().unsqueeze(1).expand(-1, 2, -1).flatten().numpy(),
        "best_cos": best,
        "latent": latent,
        "frequency": frequency[latent],
        "null_mean": np.full(rows, null_mean),
        "null_upper": np.full(rows, null_top),
    }
