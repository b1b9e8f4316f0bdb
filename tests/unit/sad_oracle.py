"""Test oracle of the SAD stage: the slow, obvious per-pair computation that the vectorised statistics of
:mod:`svalign.sad.decompose` must reproduce (used by tests/unit/test_sad.py and benchmarks/sad.py)."""

from __future__ import annotations

import numpy as np

from svalign.sad.decompose import RATIO_DECIMALS

__all__ = ["reference_pair"]


def reference_pair(
    x: np.ndarray, U: np.ndarray, S: np.ndarray, V: np.ndarray, t: int, j: int, keys: list[int]
) -> tuple[int, float, int]:
    """Slow, obvious reference for one pair (t, j): loops over keys like the authors' per-pair scripts.

    Args:
        x: one prompt's head inputs ``[pos, d_in]``; U, V: ``[d_in, r]``; S: ``[r]`` (one head, one offset).
        keys: the allowed keys K(t).

    Returns:
        (N_recon, Rolls–Tovée S, top rank) — what :func:`svalign.sad.decompose.pair_statistics` computes for every
        pair at once.
    """
    query = S * (x[t] @ U)  # σ_k (x̃_t · u_k)
    terms = {i: query * (x[i] @ V) for i in keys}
    others = [i for i in keys if i != j]
    c = terms[j] - sum(terms[i] for i in others) / len(others)
    ltilde = float(c.sum())
    ordered = np.sort(c)[::-1]
    n = -1
    if ltilde > 0:
        running = 0.0
        for count, value in enumerate(ordered, start=1):
            running += value
            if round(running / ltilde, RATIO_DECIMALS) >= 1:
                n = count
                break
        else:
            n = len(c)
    sparseness = float(np.mean(np.abs(c)) ** 2 / np.mean(c**2))
    return n, sparseness, int(np.argmax(np.abs(c)))
