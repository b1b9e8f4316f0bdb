"""Hand-made pair columns of a SAD run for summary and claim tests: the null columns a test does not set."""

from __future__ import annotations

import numpy as np

from svalign.definitions import NULL_PREFIXES, NULLS


def with_nulls(pairs: dict, rng: np.random.Generator | None = None, spread: float = 0.1) -> dict:
    """``pairs`` (with ``layer``, ``head``, ``null_sparseness [pairs, draws]``, ``share_by_rank``) completed with the
    other nulls' columns, the soft-cap column and every null's own-firing draws.

    Without ``rng`` only the Haar null ran (the others NaN) and no draw has own firing pairs. With it, every null
    ran: the other nulls' S and each draw's own-firing S are the Haar null's S plus uniform noise of ``spread``.
    """
    n, draws = pairs["null_sparseness"].shape
    pairs.setdefault("softcap_distortion", np.zeros(n, np.float32))
    pairs["nulls"] = list(NULLS) if rng is not None else ["haar"]
    for null in NULLS:
        prefix = NULL_PREFIXES[null]
        ran = null in pairs["nulls"]
        if null != "haar":
            noise = rng.uniform(-spread, spread, (n, draws)) if ran else np.nan
            pairs[prefix + "sparseness"] = (pairs["null_sparseness"] + noise).astype(np.float32)
            pairs[prefix + "share_by_rank"] = pairs["share_by_rank"] * (1.0 if ran else np.nan)
        if rng is None or not ran:
            pairs[prefix + "own"] = None
            continue
        draw = np.repeat(np.arange(draws)[None], n, 0)
        own = pairs[prefix + "sparseness"] + rng.uniform(-spread, spread, (n, draws))
        pairs[prefix + "own"] = {
            "layer": np.repeat(pairs["layer"], draws),
            "draw": draw.ravel(),
            "head": np.repeat(pairs["head"], draws),
            "sparseness": own.ravel().astype(np.float32),
        }
    return pairs
