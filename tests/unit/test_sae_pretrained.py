"""Published SAEs: SAELens and sparsify directories read and carried into head-input coordinates, checked against
a plain numpy forward of the SAE on the residual (the oracle), and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from svalign.sae import dictionary, pretrained, run
from svalign.sae.config import SAEConfig
from svalign.sae.corpus import build_corpus

D, N, K = 12, 40, 3


def _saelens_dir(tmp_path, architecture: str, centre: bool, hook: str = "blocks.2.hook_resid_pre"):
    """A SAELens directory with random weights and the numpy arrays themselves: unit decoder rows for TopK (as
    TopK SAEs are trained), rows of uneven norms otherwise."""
    rng = np.random.default_rng(0)
    decoder = rng.normal(size=(N, D))
    decoder = decoder / np.linalg.norm(decoder, axis=1, keepdims=True)
    if architecture != "topk":
        decoder = decoder * rng.uniform(0.5, 2.0, size=(N, 1))
    arrays = {
        "W_enc": rng.normal(size=(D, N)).astype(np.float32),
        "b_enc": rng.normal(size=N).astype(np.float32) * 0.1,
        "W_dec": decoder.astype(np.float32),
        "b_dec": rng.normal(size=D).astype(np.float32),
    }
    directory = tmp_path / architecture
    directory.mkdir()
    save_file({name: torch.from_numpy(value) for name, value in arrays.items()}, directory / "sae_weights.safetensors")
    cfg = {"architecture": architecture, "d_in": D, "d_sae": N, "hook_name": hook, "apply_b_dec_to_input": centre}
    if architecture == "topk":
        cfg["activation_fn_kwargs"] = {"k": K}
    (directory / "cfg.json").write_text(json.dumps(cfg))
    return directory, {name: value.astype(np.float64) for name, value in arrays.items()}


def _oracle(arrays: dict, r: np.ndarray, centre: bool, k: int | None) -> np.ndarray:
    """SAELens' forward on residuals ``r`` ``[n, D]``: ReLU pre-activations, the k largest kept (TopK), decoded."""
    pre = (r - (arrays["b_dec"] if centre else 0)) @ arrays["W_enc"] + arrays["b_enc"]
    acts = np.maximum(pre, 0)
    if k is not None:
        threshold = np.sort(acts, axis=1)[:, -k][:, None]
        acts = np.where(acts >= threshold, acts, 0)
    return acts @ arrays["W_dec"] + arrays["b_dec"]


@pytest.mark.parametrize(("architecture", "centre"), [("topk", True), ("topk", False), ("standard", True)])
def test_published_sae_in_head_input_coordinates_matches_the_oracle(tmp_path, architecture, centre):
    """r = s·x + c·1 exactly: the carried SAE's reconstruction of x is the oracle's of r, mapped back."""
    directory, arrays = _saelens_dir(tmp_path, architecture, centre)
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scale, shift = 3.5, -0.25
    r = scale * x.numpy() + shift
    published = pretrained.read_published(directory, k_cap=N, key="sae.pretrained")
    assert published.hook == "blocks.2.hook_resid_pre" and len(published.digest) == 64
    t = pretrained.to_head_input(published, scale, shift)
    np.testing.assert_allclose(np.linalg.norm(t["decoder"], axis=1), 1.0, rtol=1e-6)
    coder = dictionary.read_sae(t["encoder"], t["encoder_bias"], t["decoder"], t["b_dec"], t["k"])
    acts, indices = dictionary.encode(coder, x.float())
    with torch.no_grad():
        ours = coder.decode(acts, indices).double().numpy()
    expected = (_oracle(arrays, r, centre, K if architecture == "topk" else None) - shift) / scale
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_sparsify_directories_load_as_saved(tmp_path):
    sparsify = dictionary._sparsify()
    torch.manual_seed(0)
    sae = sparsify.SparseCoder(D, sparsify.SparseCoderConfig(activation="topk", num_latents=N, k=K))
    sae.save_to_disk(tmp_path / "layers.2")
    published = pretrained.read_published(tmp_path / "layers.2", k_cap=99, key="k")
    assert published.k == K and published.activation == "topk"
    t = pretrained.to_head_input(published, 1.0, 0.0)
    coder = dictionary.read_sae(t["encoder"], t["encoder_bias"], t["decoder"], t["b_dec"], t["k"])
    x = torch.randn(16, D)
    with torch.no_grad():
        np.testing.assert_allclose(coder(x).sae_out.numpy(), sae(x).sae_out.numpy(), rtol=1e-5, atol=1e-5)


def test_refusals_name_the_key(tmp_path):
    directory, _ = _saelens_dir(tmp_path, "jumprelu", True)
    with pytest.raises(ValueError, match=r"sae\.pretrained: .*'jumprelu' SAE"):
        pretrained.read_published(directory, 8, "sae.pretrained")
    with pytest.raises(FileNotFoundError, match=r"sae\.pretrained: .* has no cfg\.json"):
        pretrained.read_published(tmp_path / "missing", 8, "sae.pretrained")
    config = SAEConfig(pretrained=[{"model": "m", "layer": 5, "path": str(directory)}])
    with pytest.raises(ValueError, match=r"sae\.pretrained: m layer 5 is not one of its sites \(sae\.sites\.m"):
        pretrained.published_sites(config.pretrained, "m", [1, 2])
    assert pretrained.published_sites(config.pretrained, "other", [1]) == {}
    other, _ = _saelens_dir(tmp_path, "topk", True, hook="blocks.7.hook_resid_post")
    entry = {"model": "m", "layer": 2, "path": str(other), "input": "residual"}
    with pytest.raises(ValueError, match=r"reads blocks\.7\.hook_resid_post, not the residual entering the layer"):
        pretrained.load_site(entry, torch.zeros(4, D), None, 8, {"model": "m", "layer": 2})


def test_a_published_sae_replaces_training_at_its_site(minilm_bridge, minilm_weights, tmp_path):
    """sae_train with a sparsify SAE for MiniLM layer 1: its unit decoder rows are the site's dictionary, nothing is
    trained (final loss NaN), its quality is measured like a trained SAE's and provenance records its SHA-256."""
    sparsify = dictionary._sparsify()
    torch.manual_seed(0)
    sae = sparsify.SparseCoder(384, sparsify.SparseCoderConfig(activation="topk", num_latents=512, k=8))
    sae.save_to_disk(tmp_path / "sae")
    options = {"n_tokens": 512, "context_len": 16, "k": 8, "steps": 2, "batch_size": 64}
    options["pretrained"] = [{"model": "minilm", "layer": 1, "path": str(tmp_path / "sae")}]
    texts = build_corpus(["json"])["text"]
    step = run.train_step(minilm_bridge, minilm_weights, texts, [1], options, "minilm", torch.device("cpu"))
    _, dictionary_columns = step.tables["dictionary"]
    np.testing.assert_allclose(dictionary_columns["decoder"], sae.W_dec.detach().numpy(), rtol=1e-5, atol=1e-6)
    _, quality = step.tables["quality"]
    assert np.isnan(quality["final_loss"][0]) and quality["n_latents"][0] == 512 and quality["k"][0] == 8
    assert -1.0 < quality["explained_variance"][0] < 0.2  # measured, not assumed: a random SAE reconstructs nothing
    assert step.record["config"]["published"][0]["sha256"] == pretrained.weights_digest(tmp_path / "sae")
