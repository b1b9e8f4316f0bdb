"""SAE stage: do a head's singular vectors point at the features (SAE latents) it reads?

Modules: :mod:`~svalign.sae.config` (options, torch-free), :mod:`~svalign.sae.corpus` (the offline corpus,
torch-free), :mod:`~svalign.sae.dictionary` (head inputs and the sparse autoencoder), :mod:`~svalign.sae.align`
(singular vectors vs decoder directions), :mod:`~svalign.sae.attribution` (attention logits split over latent
pairs) and :mod:`~svalign.sae.run` (the two steps rules call). This file imports nothing.

The stage's tables are declared with every other in :mod:`svalign.tables`, its figures are in
:mod:`svalign.figures.sae`, its caption text in :mod:`svalign.captions` and its claims in :mod:`svalign.claims.sae`.
"""
