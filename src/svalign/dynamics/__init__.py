"""The training-dynamics stage (paper Fig 7b): a small transformer trained from scratch on repeated
segments, its checkpoints scored and run through the SAD stage.

Submodules (imported one by one; this package imports nothing, so :mod:`svalign.dynamics.config` stays torch-free):

* :mod:`~svalign.dynamics.config`: the run's configuration, checkpoint schedule and names (no torch);
* :mod:`~svalign.dynamics.task`: the repeated-segment task, its tokenizer, losses and the SAD prompts;
* :mod:`~svalign.dynamics.train`: the model and resumable training with atomic checkpoints;
* :mod:`~svalign.dynamics.scores`: per-head induction and previous-token scores, the manifest, the SAD table.
"""

__all__: list[str] = []
