"""The toy stage (paper Figs 1-4, App. A and E): a superposition autoencoder trained jointly with one
bilinear attention head, its alignment metrics, the closed-form optimum and the parameter sweeps.

Submodules (imported one by one; this package imports nothing, so :mod:`svalign.toy.config` stays torch-free):

* :mod:`~svalign.toy.config`: templates, the experiment config and the sweep grid (no torch);
* :mod:`~svalign.toy.train`: parameters, data, losses and the batched training loop;
* :mod:`~svalign.toy.metrics`: head-feature alignment metrics, the shared Hungarian matching and the
  columns of the weights, metrics and trajectory tables;
* :mod:`~svalign.toy.theory`: the closed-form optimum Ω* (Theorem 1) and the anisotropic features of Theorem 2;
* :mod:`~svalign.toy.sweeps`: the trained sweeps: one-at-a-time sweep rows and the anisotropy sweep.
"""

__all__: list[str] = []
