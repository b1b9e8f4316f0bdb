"""Configuration of the training-dynamics stage, without torch: the run, its checkpoint schedule, the checkpoint
names, and the checkpoint list the workflow turns into models (the Snakefile imports this on every call, dry runs
included).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from svalign.mappings import known_fields

__all__ = [
    "N_RESERVED",
    "RESERVED_TOKENS",
    "DynamicsConfig",
    "checkpoint_name",
    "checkpoint_step",
    "checkpoint_steps",
    "dynamics_models",
    "series_in_one_job",
]

RESERVED_TOKENS = ("<unk>", "<pad>", "<bos>")
"""Special tokens, ids 0, 1, 2. Training never uses them (no BOS: the SAD stage feeds causal models without one);
they exist so the tokenizer behaves like any other Hugging Face tokenizer (unknown words, padding)."""
N_RESERVED = len(RESERVED_TOKENS)
"""Number of special tokens: ordinary token ``t{i}`` has model id ``i + N_RESERVED``."""


@dataclass(frozen=True)
class DynamicsConfig:
    """One training run (config key ``dynamics``; every field mirrors a key there).

    Attributes:
        seed: seeds the init (``derive_seed(seed, "dynamics/init")``) and the training data stream.
        vocab_size: ordinary tokens ``t0 … t{V−1}`` (the model's vocabulary adds 3 special tokens).
        seq_len: tokens per sequence; also the model's context (``max_position_embeddings``).
        min_period, max_period: the repeated segment's length L is uniform in ``[min_period, max_period]``;
            ``min_period >= 3`` keeps the induction key t − L + 1 apart from the previous token t − 1, and
            ``2 * max_period <= seq_len`` so that both copies fit.
        aba_prob: probability that a filler token repeats the one two positions back (see the module doc).
        n_layers, n_heads, d_model, d_mlp: GPT-NeoX shape (d_head = d_model / n_heads).
        rotary_pct: fraction of each head's dimensions that are rotated (Pythia: 0.25; 1.0 forms heads faster).
        steps: optimiser updates; checkpoint ``step N`` holds the weights after N updates (0 = init).
        batch_size: sequences per update.
        lr, weight_decay, warmup_steps, max_grad_norm: AdamW with linear warm-up to ``lr`` (then constant), and
            gradient-norm clipping (``None``: off).
        n_checkpoints: at least this many checkpoints (see :func:`checkpoint_steps`).
        eval_batch_size: sequences of the fixed evaluation batch (scores and losses of each checkpoint).
        log_every: record the training-batch losses every this many updates.
    """

    seed: int = 0
    vocab_size: int = 64
    seq_len: int = 32
    min_period: int = 6
    max_period: int = 16
    aba_prob: float = 0.3
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_mlp: int = 256
    rotary_pct: float = 1.0
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    n_checkpoints: int = 40
    eval_batch_size: int = 64
    log_every: int = 1

    def __post_init__(self) -> None:
        positive = ("vocab_size", "seq_len", "n_layers", "n_heads", "d_model", "d_mlp", "steps", "batch_size")
        for name in (*positive, "eval_batch_size", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"dynamics config: {name} must be an integer >= 1, got {value!r}")
        for name in ("seed", "warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"dynamics config: {name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.min_period, int) or self.min_period < 3:
            raise ValueError(
                f"dynamics config: min_period must be an integer >= 3 (with L = 2 the induction key is the "
                f"previous token), got {self.min_period!r}"
            )
        if not isinstance(self.max_period, int) or self.max_period < self.min_period:
            raise ValueError(
                f"dynamics config: max_period must be an integer >= min_period ({self.min_period}), "
                f"got {self.max_period!r}"
            )
        if 2 * self.max_period > self.seq_len:
            raise ValueError(
                f"dynamics config: max_period must be <= seq_len / 2 = {self.seq_len // 2} so that both copies "
                f"fit, got {self.max_period}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(f"dynamics config: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not (isinstance(self.aba_prob, int | float) and 0 <= self.aba_prob < 1):
            raise ValueError(f"dynamics config: aba_prob must lie in [0, 1), got {self.aba_prob!r}")
        if not (isinstance(self.rotary_pct, int | float) and 0 < self.rotary_pct <= 1):
            raise ValueError(f"dynamics config: rotary_pct must lie in (0, 1], got {self.rotary_pct!r}")
        rotary_dim = int(self.d_head * self.rotary_pct)
        if rotary_dim < 2 or rotary_dim % 2:
            raise ValueError(
                f"dynamics config: rotary_pct × d_head = {self.rotary_pct} × {self.d_head} must give an even number "
                f"of rotated dimensions >= 2, got {rotary_dim}"
            )
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"dynamics config: lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            raise ValueError(f"dynamics config: weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and not (
            isinstance(self.max_grad_norm, int | float) and self.max_grad_norm > 0
        ):
            raise ValueError(f"dynamics config: max_grad_norm must be > 0 or null, got {self.max_grad_norm!r}")
        if not isinstance(self.n_checkpoints, int) or not 2 <= self.n_checkpoints <= self.steps + 1:
            raise ValueError(
                f"dynamics config: n_checkpoints must be an integer in [2, steps + 1 = {self.steps + 1}], "
                f"got {self.n_checkpoints!r}"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> DynamicsConfig:
        """Build from a config mapping; unknown keys fail with their names."""
        return cls(**known_fields(cls, mapping, "dynamics"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def model_vocab_size(self) -> int:
        """Vocabulary of the model and tokenizer: the ordinary tokens plus :data:`RESERVED_TOKENS`."""
        return self.vocab_size + N_RESERVED

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def schedule(self) -> list[int]:
        """The checkpoint steps of this run (:func:`checkpoint_steps`)."""
        return checkpoint_steps(self.steps, self.n_checkpoints)


# --------------------------------------------------------------------------------------------------
# Checkpoint schedule
# --------------------------------------------------------------------------------------------------


def checkpoint_steps(total_steps: int, n_checkpoints: int = 40) -> list[int]:
    """Pythia-style checkpoint steps: 0, powers of two (1, 2, 4, …), then evenly spaced up to ``total_steps``.

    Pythia saves steps 0, 1, 2, 4, …, 512 and then every 1000 steps: the doubling part resolves the first
    steps, where the weights move fastest, and the even part keeps later stretches (where phase changes happen)
    from being covered by only a few far-apart checkpoints. Here the even spacing Δ is the largest that gives at
    least ``n_checkpoints`` distinct steps, and the powers of two run up to Δ.

    Args:
        total_steps: the last step (always included), >= 1.
        n_checkpoints: minimum number of steps returned, in ``[2, total_steps + 1]``.

    Returns:
        Ascending unique ints starting at 0 and ending at ``total_steps``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 2 <= n_checkpoints <= total_steps + 1:
        raise ValueError(f"n_checkpoints must lie in [2, total_steps + 1 = {total_steps + 1}], got {n_checkpoints}")
    for n_even in range(1, total_steps + 1):
        even = np.rint(np.linspace(0, total_steps, n_even + 1)).astype(np.int64)
        spacing = total_steps / n_even
        doubling = 2 ** np.arange(int(np.log2(spacing)) + 1) if spacing > 1 else np.zeros(0, np.int64)
        steps = np.unique(np.concatenate([even, doubling[doubling < spacing]]))
        if len(steps) >= n_checkpoints:
            return [int(s) for s in steps]
    return list(range(total_steps + 1))  # not reached: n_even = total_steps gives every step


def checkpoint_name(step: int) -> str:
    """Name of the checkpoint after ``step`` updates: its directory under the run's checkpoint directory, and
    (prefixed ``dyn_``) its model name in the workflow. The one place this format is written."""
    return f"step{step:06d}"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint named by :func:`checkpoint_name`, None for any other name (temporary directories,
    other files)."""
    match = re.fullmatch(r"step(\d{6,})", name)
    if match is None or checkpoint_name(int(match.group(1))) != name:
        return None
    return int(match.group(1))


# Pythia's revisions (``step1000``, not zero-padded) and paths named after them: the step of an external checkpoint.
_EXTERNAL_STEP = re.compile(r"step(\d+)")


def dynamics_models(dynamics: Mapping[str, Any], checkpoint_dir: str) -> dict[str, dict[str, Any]]:
    """The checkpoints of the dynamics stage as models for the extract_weights -> svd -> sad rules.

    Our series (``checkpoints`` empty): ``dyn_stepNNNNNN`` -> ``{checkpoint_dir}/stepNNNNNN``
    (:func:`checkpoint_name`), one per scheduled step. External checkpoints: ``dyn_cNNN`` in the listed order,
    ``"name@revision"`` or a local directory; the step is read from a ``stepN`` in the revision or path (Pythia's
    convention), else the list index.

    Returns:
        name -> ``{"source", "revision", "step", "config_key", "ours"}`` in training order.
    """
    external = list(dynamics.get("checkpoints") or [])
    if not external:
        config = DynamicsConfig.from_mapping(dynamics.get("train") or {})
        return {
            f"dyn_{checkpoint_name(step)}": {
                "source": f"{checkpoint_dir}/{checkpoint_name(step)}",
                "revision": None,
                "step": step,
                "config_key": "dynamics.train",
                "ours": True,
            }
            for step in config.schedule()
        }
    models = {}
    for index, item in enumerate(external):
        source, _, revision = item.partition("@")
        found = _EXTERNAL_STEP.search(revision or source)
        models[f"dyn_c{index:03d}"] = {
            "source": source,
            "revision": revision or None,
            "step": int(found.group(1)) if found else index,
            "config_key": f"dynamics.checkpoints[{index}]",
            "ours": False,
        }
    return models


def series_in_one_job(dynamics: Mapping[str, Any]) -> bool:
    """Whether the checkpoints run in one job (rule dynamics_series) or one job each (rule dynamics_checkpoint):
    ``dynamics.checkpoint_jobs``, where ``auto`` means one job for our own series (small checkpoints, whose
    start-up costs more than their work) and one job each for external checkpoints."""
    jobs = dynamics.get("checkpoint_jobs", "auto")
    if jobs == "auto":
        return not dynamics.get("checkpoints")
    return jobs == "series"
