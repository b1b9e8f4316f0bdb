"""The paper's claims beside our measurements, with bootstrap intervals and verdicts (torch-free).

Submodules (imported one by one; this package imports nothing):

* :mod:`~svalign.claims.core`: :class:`~svalign.claims.core.Claim`, the tested numbers
  (:class:`~svalign.claims.core.Comparison`) and their verdicts, readings of a definition, the table and Markdown;
* :mod:`~svalign.claims.toy`: the toy-model claims (intervals over seeds);
* :mod:`~svalign.claims.sad`: the SAD claims (intervals over prompts and null draws, from ``pairs.parquet``);
* :mod:`~svalign.claims.dynamics`: the training-dynamics claim;
* :mod:`~svalign.claims.sae`: the SAE claims, our extension (intervals over heads and prompts);
* :mod:`~svalign.claims.details`: the generated tables of the measured values behind the claims (docs/results.md).

:mod:`svalign.report` gathers them for rule ``results_table`` and the report captions.
"""

__all__: list[str] = []
