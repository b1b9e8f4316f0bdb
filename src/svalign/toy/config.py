"""Toy-model configuration: templates, the experiment config and the sweep grid (no torch).

Kept apart from the torch modules of :mod:`svalign.toy` so that config validation (every ``snakemake`` call, dry
runs included) and the table schemas do not import torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from svalign.mappings import known_fields

__all__ = [
    "SWEEP_PARAMETERS",
    "SWEEP_SHAPE",
    "AttentionLoss",
    "Template",
    "ToyConfig",
    "make_template",
    "points_of_shape",
    "sweep_config",
    "sweep_groups",
    "sweep_points",
]

AttentionLoss = Literal["cross_entropy", "mse"]

# --------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """Attention template: which query feature should attend to which key feature, and how strongly.

    Attributes:
        n_features: N.
        query_features: a_p for each pair ``[P]``, pairs sorted by value, strongest first.
        key_features: b_p ``[P]``.
        values: T[a_p, b_p] ``[P]``, in (0, 1].
    """

    n_features: int
    query_features: tuple[int, ...]
    key_features: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def n_pairs(self) -> int:
        return len(self.values)

    @property
    def attended_features(self) -> tuple[int, ...]:
        """Features that take part in any pair, sorted."""
        return tuple(sorted(set(self.query_features) | set(self.key_features)))

    def matrix(self) -> np.ndarray:
        """T as a dense ``[N, N]`` array."""
        T = np.zeros((self.n_features, self.n_features), dtype=np.float32)
        T[list(self.query_features), list(self.key_features)] = self.values
        return T


def make_template(kind: str, n_features: int, n_pairs: int = 1, pair_offset: int = 20) -> Template:
    """Build one of the paper's templates.

    * ``single_pair``: T[0, 1] = 1.
    * ``multi_pair``: T[i, i + pair_offset] = (P − i)/P for i = 0..P−1 (linearly decaying, largest 1).

    The logit scale β (``target_scale``) multiplies T, so the largest target logit is β.
    """
    if kind == "single_pair":
        if n_features < 2:
            raise ValueError("template single_pair needs n_features >= 2")
        return Template(n_features, (0,), (1,), (1.0,))
    if kind == "multi_pair":
        if n_pairs < 1 or pair_offset < n_pairs or pair_offset + n_pairs > n_features:
            raise ValueError(
                f"template multi_pair: need 1 <= n_pairs <= pair_offset and pair_offset + n_pairs <= "
                f"n_features (got n_pairs={n_pairs}, pair_offset={pair_offset}, n_features={n_features})"
            )
        queries = tuple(range(n_pairs))
        keys = tuple(i + pair_offset for i in queries)
        values = tuple((n_pairs - i) / n_pairs for i in queries)
        return Template(n_features, queries, keys, values)
    raise ValueError(f"unknown template kind {kind!r} (expected single_pair or multi_pair)")


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyConfig:
    """One toy experiment: shared shapes and optimiser, plus the instance grid (seeds × sparsities × λ).

    ``instance_grid`` says how λ and S combine: ``product`` trains every (λ, S) pair, ``zip`` pairs them
    element-wise (λ_i with S_i), which lets sweep points of one shape share a run without the unused corners.
    Every field mirrors a key of ``toy.experiments.<name>`` in ``config.yaml`` (documented in
    ``workflow/schemas/config.schema.yaml``).
    """

    n_features: int = 20
    d_model: int = 10
    d_head: int = 10
    template: str = "single_pair"
    n_pairs: int = 1
    pair_offset: int = 20
    target_scale: float = 10.0
    context_len: int = 8
    attention_loss: AttentionLoss = "cross_entropy"
    seeds: tuple[int, ...] = (0, 1, 2)
    sparsities: tuple[float, ...] = (0.9,)
    lambdas: tuple[float, ...] = (1.0, 0.0)
    instance_grid: str = "product"
    importance_decay: float = 1.0
    steps: int = 3000
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    log_every: int = 100
    eval_batch_size: int = 4096
    train_features: bool = True
    train_head: bool = True
    head_init: str = "xavier"
    max_loss: float = 1e6

    def __post_init__(self) -> None:
        for name in ("n_features", "d_model", "d_head", "context_len", "steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"toy config: {name} must be >= 1, got {getattr(self, name)}")
        if any(not 0.0 <= s < 1.0 for s in self.sparsities):
            raise ValueError(f"toy config: sparsities must lie in [0, 1), got {list(self.sparsities)}")
        if any(lam < 0 for lam in self.lambdas):
            raise ValueError(f"toy config: lambdas must be >= 0, got {list(self.lambdas)}")
        if self.head_init not in ("xavier", "rank_one"):
            raise ValueError(f"toy config: head_init must be xavier or rank_one, got {self.head_init!r}")
        if self.attention_loss not in ("cross_entropy", "mse"):
            raise ValueError(f"toy config: attention_loss must be cross_entropy or mse, got {self.attention_loss!r}")
        if not self.seeds or not self.sparsities or not self.lambdas:
            raise ValueError("toy config: seeds, sparsities and lambdas must each list at least one value")
        if self.instance_grid not in ("product", "zip"):
            raise ValueError(f"toy config: instance_grid must be product or zip, got {self.instance_grid!r}")
        if self.instance_grid == "zip" and len(self.lambdas) != len(self.sparsities):
            raise ValueError(
                f"toy config: instance_grid zip pairs lambdas with sparsities, but they have "
                f"{len(self.lambdas)} and {len(self.sparsities)} values"
            )
        make_template(self.template, self.n_features, self.n_pairs, self.pair_offset)  # validates

    @classmethod
    def from_mapping(cls, mapping: dict) -> ToyConfig:
        """Build from a (schema-validated) config mapping; lists become tuples, unknown keys fail."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in known_fields(cls, mapping, "toy").items()}
        return cls(**values)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def estimated_memory_bytes(self) -> int:
        """Rough peak memory of training: activations of the largest batch, ~8 float32 copies of
        ``[instance, batch, 1 + m, N]`` (data, hidden, reconstruction and their gradients)."""
        batch = max(self.batch_size, self.eval_batch_size)
        return 8 * 4 * len(self.instances()) * batch * (1 + self.context_len) * max(self.n_features, self.d_model)

    @property
    def template_spec(self) -> Template:
        return make_template(self.template, self.n_features, self.n_pairs, self.pair_offset)

    def instances(self) -> list[dict]:
        """The instance grid, in a fixed order: λ (outer), sparsity, seed (inner); ``zip``: (λ_i, S_i) × seed."""
        if self.instance_grid == "zip":
            settings = list(zip(self.lambdas, self.sparsities, strict=True))
        else:
            settings = list(itertools.product(self.lambdas, self.sparsities))
        return [
            {"instance": i, "seed": seed, "sparsity": sparsity, "lam": lam}
            for i, ((lam, sparsity), seed) in enumerate(itertools.product(settings, self.seeds))
        ]


# --------------------------------------------------------------------------------------------------
# One-at-a-time sweeps (paper App. A and E)
# --------------------------------------------------------------------------------------------------

SWEEP_PARAMETERS = ("lam", "sparsity", "n_features", "context_len", "d_head")


def sweep_points(base: dict, grid: dict[str, Sequence[float]]) -> list[dict[str, float]]:
    """Points of a one-at-a-time sweep: the base experiment, then each swept parameter varied alone.

    ``lam`` and ``sparsity`` map onto the base experiment's single λ and S. Duplicates (a grid value equal to the
    base value) appear once. Returns one dict per point with every parameter of :data:`SWEEP_PARAMETERS`.
    """
    unknown = sorted(set(grid) - set(SWEEP_PARAMETERS))
    if unknown:
        raise ValueError(f"toy.sweeps.grid: cannot sweep {unknown} (choose from {list(SWEEP_PARAMETERS)})")
    center = {
        "lam": float(base["lambdas"][0]),
        "sparsity": float(base["sparsities"][0]),
        "n_features": int(base["n_features"]),
        "context_len": int(base["context_len"]),
        "d_head": int(base["d_head"]),
    }
    points = [center]
    for name, values in grid.items():
        for value in values:
            point = {**center, name: type(center[name])(value)}
            if point not in points:
                points.append(point)
    return points


SWEEP_SHAPE = ("n_features", "context_len", "d_head")


def sweep_groups(points: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    """The distinct shapes (N, m, H) among sweep points, in first-seen order: each is one batched run."""
    shapes: list[dict[str, float]] = []
    for point in points:
        shape = {name: point[name] for name in SWEEP_SHAPE}
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def points_of_shape(points: Sequence[dict[str, float]], shape: dict[str, float]) -> list[dict[str, float]]:
    """The sweep points with this (N, m, H): they differ only in λ and S and can train as one run."""
    return [p for p in points if all(int(p[name]) == int(shape[name]) for name in SWEEP_SHAPE)]


def sweep_config(base: dict, points: Sequence[dict[str, float]], seeds: Sequence[int]) -> ToyConfig:
    """The :class:`ToyConfig` training sweep points that share one shape as one run.

    Instances are (λ, S) of each point (``instance_grid: zip``, so no unused λ × S corners) × seeds.

    Raises:
        ValueError: no points, or points of different shapes.
    """
    if not points:
        raise ValueError("sweep_config: no sweep points given")
    shapes = sweep_groups(points)
    if len(shapes) > 1:
        raise ValueError(f"sweep_config: points of one run must share (N, m, H), got {shapes}")
    values = {k: v for k, v in base.items() if k not in ("lambdas", "sparsities", "seeds", "instance_grid")}
    values.update(
        n_features=int(shapes[0]["n_features"]),
        context_len=int(shapes[0]["context_len"]),
        d_head=int(shapes[0]["d_head"]),
        lambdas=[float(p["lam"]) for p in points],
        sparsities=[float(p["sparsity"]) for p in points],
        instance_grid="zip",
        seeds=list(seeds),
    )
    return ToyConfig.from_mapping(values)
