"""The SAE sweep's summary: one row per point and site, verdicts from each point's own tables, and the agreement
of seeds (a planted unstable head and a planted verdict flip must show)."""

from __future__ import annotations

import numpy as np
import pytest
from test_sae_claims import MODEL, OPTIONS, write_stage

from svalign.claims.sae_sweep import sweep_rows
from svalign.sae.config import sweep_points


def test_sweep_points_are_the_product_in_order():
    points = sweep_points({"expansion_factor": [8, 16], "k": [16], "seeds": [0, 1]})
    assert points == [
        {"expansion_factor": 8, "k": 16, "seed": 0},
        {"expansion_factor": 8, "k": 16, "seed": 1},
        {"expansion_factor": 16, "k": 16, "seed": 0},
        {"expansion_factor": 16, "k": 16, "seed": 1},
    ]


def test_agreement_across_seeds_counts_heads_and_verdicts(tmp_path):
    """At expansion 8 the seeds agree on 18 of 20 heads and on both verdicts; at 16 a seed flips the alignment
    verdict (most heads aligned vs few)."""
    aligned = [True] * 18 + [False] * 2
    tables = {
        (8, 0): {"trained": aligned},
        (8, 1): {"trained": [*aligned[:16], False, False, False, True]},  # heads 16, 17, 19 differ: 17 agree
        (16, 0): {"trained": aligned},
        (16, 1): {"trained": [False] * 18 + [True] * 2},
    }
    points = []
    for (expansion, seed), flags in tables.items():
        directory = tmp_path / f"e{expansion}s{seed}"
        directory.mkdir()
        paths = write_stage(directory, flags, [0.7] * 20)
        points.append(
            (
                {"expansion_factor": expansion, "k": 16, "seed": seed},
                {name: paths[f"sae_{name}_{MODEL}"] for name in ("heads", "sites", "attribution")},
            )
        )
    rows = sweep_rows(points, MODEL, OPTIONS)
    assert rows["expansion_factor"] == [8, 8, 16, 16] and rows["seed"] == [0, 1, 0, 1]
    assert rows["n_seeds"] == [2] * 4 and rows["n_heads"] == [20] * 4
    assert rows["head_agreement"][:2] == [pytest.approx(17 / 20)] * 2
    assert rows["head_agreement"][2:] == [pytest.approx(0.0)] * 2  # 18 flip to False, 2 to True: none agree
    assert rows["alignment_verdict"] == ["pass", "pass", "pass", "differs"]
    assert rows["verdicts_stable"] == [True, True, False, False]
    assert rows["attribution_verdict"] == ["pass"] * 4
    assert np.allclose(rows["aligned_fraction"], [0.9, 0.85, 0.9, 0.1])
