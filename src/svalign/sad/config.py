"""Options of the SAD stage (config key ``sad``), without torch: the Snakefile imports this on every call.

The prompt-set keys of the ``sad`` section (``prompt_sets``, ``n_ioi_prompts``, ``prompt_seed``) are not options of
the decomposition: they choose the prompts (:func:`svalign.sad.prompts.prompt_set`), so editing them reruns only
the jobs of the prompt sets they concern.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from svalign.mappings import known_fields

__all__ = ["SADConfig"]


@dataclass(frozen=True)
class SADConfig:
    """Options of the decomposition; the schema's ``sad`` section documents each (same defaults, a test checks).

    Attributes:
        threshold: a pair (t, j) fires when A(t, j) ≥ threshold; None: A(t, j) ≥ 1/|K(t)| (uniform attention).
        skip_first_key: ignore pairs whose key is position 0 (BOS / [CLS]).
        null_draws: draws of the rotation null.
        null_seed: seed of the null rotations.
        chunk_prompts: prompts per forward pass (bounds memory).
    """

    threshold: float | None = None
    skip_first_key: bool = False
    null_draws: int = 5
    null_seed: int = 0
    chunk_prompts: int = 32

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SADConfig:
        """Build from a config mapping holding some of the fields; unknown keys fail with their names."""
        return cls(**known_fields(cls, mapping, "sad"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
