"""SAE stage: do a head's singular vectors point at the features (SAE latents) it reads?

Modules: :mod:`~svalign.sae.config` (options, torch-free), :mod:`~svalign.sae.corpus` (the offline corpus,
torch-free), :mod:`~svalign.sae.schemas` (its tables, torch-free), :mod:`~svalign.sae.dictionary` (head inputs and
the sparse autoencoder), :mod:`~svalign.sae.align` (singular vectors vs decoder directions) and
:mod:`~svalign.sae.attribution` (attention logits split over latent pairs). This file imports nothing.
"""
