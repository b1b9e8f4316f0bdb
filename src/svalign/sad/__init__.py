"""The SAD stage (paper Figs 8, 9a): sparse attention decomposition of every head's attention logits over the
singular-vector terms of its QK form, real and under the spectrum-preserving rotation null.

Submodules (imported one by one; this package imports nothing, so :mod:`svalign.sad.config` stays torch-free):

* :mod:`~svalign.sad.config`: the stage's options :class:`~svalign.sad.config.SADConfig` (no torch);
* :mod:`~svalign.sad.decompose`: the math: terms a_k(t, j), relative terms, N_recon, Rolls–Tovée sparseness, the
  allowed keys K(t), firing pairs, the rotation null and the check against the model's own scores;
* :mod:`~svalign.sad.forward`: the one forward loop every stage that reads activations shares: a prompt set to
  tokens, chunks of prompts, one forward pass each, and every layer's head inputs, scores and pattern;
* :mod:`~svalign.sad.run`: the whole stage over those forward passes and every layer, real and under the rotation
  null, and the columns of the ``sad_pairs``, ``sad_summary`` and ``sad_prompts`` tables;
* :mod:`~svalign.sad.prompts`: the prompt sets (IOI, plain text; ``repeated`` comes from the dynamics stage).
"""

__all__: list[str] = []
