"""SAE stage: a planted dictionary and a planted head are recovered (and the null does not recover them), the
latent-pair attribution sums to the logit, plus the corpus, the interference norm and the config."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from svalign import nulls
from svalign.definitions import NULLS
from svalign.sad.forward import LayerInputs
from svalign.sae import align, attribution, dictionary
from svalign.sae.config import SAEConfig
from svalign.sae.corpus import build_corpus, corpus_digest
from svalign.svd import ModelSVD, qk_svd

D_MODEL, N_FEATURES, PLANTED = 24, 48, ((0, 1, 12.0), (2, 3, 8.0), (4, 5, 5.0))  # (query feature, key feature, β)


def planted_setup() -> dict:
    """Features: 48 unit directions in 24 dims, the six planted ones orthonormal; sparse tokens; Ω = Σ β d_a d_bᵀ."""
    generator = torch.Generator().manual_seed(0)
    orthonormal, _ = torch.linalg.qr(torch.randn(D_MODEL, 6, generator=generator, dtype=torch.float64))
    rest = torch.randn(N_FEATURES - 6, D_MODEL, generator=generator, dtype=torch.float64)
    features = torch.cat([orthonormal.T, rest / rest.norm(dim=1, keepdim=True)]).float()
    rate = torch.full((N_FEATURES,), 0.04)
    rate[:6] = 0.15  # planted features are frequent, so many pairs read them
    on = torch.rand(8192, N_FEATURES, generator=generator) < rate
    magnitude = 0.5 + torch.rand(8192, N_FEATURES, generator=generator)
    tokens = (on * magnitude) @ features
    W_Q = torch.stack([beta**0.5 * features[a] for a, _, beta in PLANTED], 1)  # [d_model, 3]
    W_K = torch.stack([beta**0.5 * features[b] for _, b, beta in PLANTED], 1)
    config = SAEConfig(expansion_factor=4, k=6, steps=1000, batch_size=256, lr=5e-3, dead_after_tokens=20000)
    site = dictionary.train_sae(tokens, config, "planted", torch.device("cpu"))
    svd = qk_svd(W_Q[None, None], W_K[None, None])
    model_svd = ModelSVD(svd, torch.tensor([0]), torch.zeros(1, 1, 1, dtype=torch.float64), augmented=False)
    return {"features": features, "tokens": tokens, "W_Q": W_Q, "W_K": W_K, "sae": site.sae, "svd": model_svd}


@pytest.fixture(scope="module")
def planted():
    return planted_setup()


def test_sae_recovers_the_planted_dictionary(planted):
    """Every planted feature has a decoder direction within |cos| > 0.95; the SAE reconstructs."""
    decoder = planted["sae"].W_dec.detach()
    cos = (planted["features"][:6] @ (decoder / decoder.norm(dim=1, keepdim=True)).T).abs()
    assert cos.max(1).values.min() > 0.95
    quality = dictionary.sae_quality(planted["sae"], planted["tokens"])
    assert quality["explained_variance"] > 0.9
    assert quality["l0"] <= 6.0
    assert quality["frequency"].shape == (decoder.shape[0],)


def test_singular_vectors_align_with_planted_latents_and_the_null_does_not(planted):
    decoder = planted["sae"].W_dec.detach()
    result = align.site_alignment(planted["svd"], 0, decoder, top_singular=3, null_draws=64, null_seed=0)
    assert result.best["u"][0, :3].min() > 0.95 and result.best["v"][0, :3].min() > 0.95
    # the latent each singular vector picks is the planted feature's (up to the SAE's own error)
    unit = decoder / decoder.norm(dim=1, keepdim=True)
    for rank, (a, b, _) in enumerate(PLANTED):
        assert float(unit[result.latent["u"][0, rank]] @ planted["features"][a]).__abs__() > 0.95
        assert float(unit[result.latent["v"][0, rank]] @ planted["features"][b]).__abs__() > 0.95
    upper = torch.quantile(result.null_statistic.double(), 0.99)
    assert float(result.statistic[0]) > 0.95 > float(upper)
    assert float(result.null_best.median()) < 0.8


def test_attribution_sums_to_the_logit_and_finds_the_planted_pairs(planted):
    x = planted["tokens"][:256].reshape(16, 16, D_MODEL)
    scores = torch.einsum("btd,de,bse->bts", x, planted["W_Q"] @ planted["W_K"].T, x)  # ℓ(t, s) = x_t Ω x_sᵀ
    scores = scores.unsqueeze(1)  # one head
    inputs = LayerInputs(x, scores, torch.softmax(scores, -1))
    layer = type(planted["svd"].svd)(*(t[0] for t in planted["svd"].svd))  # the layer's HeadSVD
    nulls = []
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        q_u, q_v = (align.haar_frames(1, D_MODEL, D_MODEL, generator)[0] for _ in range(2))
        nulls.append(type(layer)(q_u @ layer.basis_q, q_v @ layer.basis_k, layer.S, layer.core_u, layer.core_v))
    pairs = attribution.attribute_pairs(
        inputs, planted["sae"], layer, nulls, causal=False, offsets_used=False, threshold=None, skip_first_key=False
    )
    assert len(pairs["head"]) > 100
    assert pairs["relative_error"].max() <= attribution.MAX_ATTRIBUTION_ERROR
    # the oracle: Σ_ab M_ab = ℓ(t, j) computed by hand in float64, independent of the SVD
    oracle = (x.double() @ (planted["W_Q"] @ planted["W_K"].T).double() @ x.double().transpose(1, 2)).numpy()
    assert np.allclose(pairs["logit"], oracle[pairs["b"], pairs["t"], pairs["j"]], rtol=1e-4, atol=1e-3)
    # pairs whose dominant latent pair is a planted feature pair: there the singular pair must name the same latents
    decoder = planted["sae"].W_dec.detach()
    feature_of = ((decoder / decoder.norm(dim=1, keepdim=True)) @ planted["features"].T).abs().argmax(1).numpy()
    dominant = set(zip(feature_of[pairs["query_latent"]], feature_of[pairs["key_latent"]], strict=True))
    planted_pair = np.array(
        [
            (a, b) in {(qa, kb) for qa, kb, _ in PLANTED}
            for a, b in zip(feature_of[pairs["query_latent"]], feature_of[pairs["key_latent"]], strict=True)
        ]
    )
    assert planted_pair.sum() > 50 and len(dominant) > 3
    assert pairs["match"][planted_pair].mean() > 0.85
    assert pairs["null_match"][planted_pair].mean() < 0.3
    assert pairs["chance"].max() <= 1.0


def test_interference_norm_matches_the_gram_matrix():
    rows = torch.randn(30, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    unit = rows / rows.norm(dim=1, keepdim=True)
    expected = np.linalg.norm((unit @ unit.T - torch.eye(30, dtype=torch.float64)).numpy(), 2)
    assert dictionary.interference_norm(rows) == pytest.approx(expected, rel=1e-9)
    orthonormal = torch.eye(8)[:5]
    assert dictionary.interference_norm(orthonormal) == pytest.approx(0.0, abs=1e-12)


def test_corpus_is_deterministic_docstrings():
    first, second = build_corpus(), build_corpus()
    assert first["text"] == second["text"] and len(first["text"]) > 500
    assert corpus_digest(first["text"]) == corpus_digest(second["text"])
    assert all(len(text) >= 40 for text in first["text"])
    assert build_corpus(["json", "no_such_module_xyz"])["missing"] == ["no_such_module_xyz"]


def test_schema_defaults_equal_library_defaults(repo):
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema["properties"]["sae"]["properties"]
    library = {f.name: f.default for f in dataclasses.fields(SAEConfig) if f.name != "sites"}
    assert set(properties) == set(library) | {"enabled", "sites"}
    for name, expected in library.items():
        assert properties[name]["default"] == pytest.approx(expected), name
    with pytest.raises(ValueError, match=r"unknown keys \['bogus'\]"):
        SAEConfig.from_mapping({"bogus": 1})


def test_corpus_windows_pack_the_corpus_with_the_encoders_special_tokens(minilm_bridge):
    tokenizer = minilm_bridge.tokenizer
    texts = build_corpus(["json"])["text"]
    tokens, starts, stream = dictionary.corpus_windows(tokenizer, texts, False, 16, 20, seed=0)
    assert tokens.shape == (20, 16) and len(set(starts.tolist())) == 20 and stream > 20 * 14
    assert (tokens[:, 0] == tokenizer.cls_token_id).all() and (tokens[:, -1] == tokenizer.sep_token_id).all()
    assert (starts % 14 == 0).all()  # non-overlapping windows of 14 text tokens
    again, _, _ = dictionary.corpus_windows(tokenizer, texts, False, 16, 20, seed=0)
    other, _, _ = dictionary.corpus_windows(tokenizer, texts, False, 16, 20, seed=1)
    assert torch.equal(tokens, again) and not torch.equal(tokens, other)
    causal, _, _ = dictionary.corpus_windows(tokenizer, texts, True, 16, 4, seed=0)  # no special tokens added
    assert not (causal == tokenizer.cls_token_id).any()
    with pytest.raises(ValueError, match=r"lower sae\.n_tokens"):
        dictionary.corpus_windows(tokenizer, texts, False, 16, 10**6, seed=0)


def test_head_inputs_stop_after_the_last_site_and_equal_the_cache(minilm_bridge, minilm_weights):
    tokens = minilm_bridge.tokenizer(["The corpus is read at the head input."], return_tensors="pt")["input_ids"]
    hooks = {layer: minilm_weights.head_input_hook.format(layer=layer) for layer in (1, 3)}
    got = dictionary.collect_head_inputs(minilm_bridge, tokens.repeat(3, 1), hooks, batch_sequences=2)
    _, cache = minilm_bridge.run_with_cache(tokens, names_filter=lambda name: name in hooks.values())
    for layer, name in hooks.items():
        assert got[layer].shape == (3 * tokens.shape[1], minilm_weights.d_model)
        assert torch.allclose(got[layer][: tokens.shape[1]], cache[name][0], atol=1e-5)
    logits = minilm_bridge(tokens)  # hooks are gone after the early stop: a plain forward runs to the end
    assert logits.shape[:2] == tokens.shape


def test_k_beyond_the_latents_fails_naming_the_key(minilm_bridge, minilm_weights):
    from svalign.sae import run

    with pytest.raises(ValueError, match=r"sae\.k = 100000 exceeds the SAE's 1536 latents"):
        run.train_step(minilm_bridge, minilm_weights, ["a text"], [0], {"k": 100000}, "minilm", torch.device("cpu"))


def _moment(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.double().T @ tokens.double() / len(tokens)


def test_the_planted_head_passes_every_null_and_beats_every_fake_dictionary(planted):
    """Ω = Σ β d_a d_bᵀ read through its SAE: beyond the Haar, the within-subspace and the covariance null (the
    smallest p a 64-draw Monte Carlo test gives is 1/65), and its statistic beats every fake dictionary's. The fakes
    do pass the Haar-null test here (96 directions drawn where the planted features put the data's energy, in 24
    dimensions): why their aligned share is a baseline and not zero."""
    decoder = planted["sae"].W_dec.detach()
    result = align.site_alignment(
        planted["svd"], 0, decoder, 3, 64, 0, _moment(planted["tokens"]), n_fakes=5, null_quantile=0.99
    )
    assert set(result.nulls) == set(NULLS)
    for null in NULLS:
        high, low = align.monte_carlo_p(result.statistic, result.nulls[null])
        assert high[0] == pytest.approx(1 / 65) and low[0] == 1.0, null
    assert result.fake_statistic.shape == (5, 1) and float(result.statistic[0]) > result.fake_statistic.max()
    assert result.fake_aligned.all()


def test_a_fake_dictionary_in_the_saes_place_does_not_beat_the_control(planted):
    """The planted negative: dictionaries of the SAE's size drawn from the tokens' second moment (no learned
    feature) in the SAE's place. Each is one more fake, so against 9 others it beats none on average (fake_p near
    uniform) and never beats the within-subspace null; the covariance null alone does not catch it (the planted
    singular vectors are the data's principal axes, where directions drawn from the data crowd), which is why the
    verdict needs the fake-dictionary control."""
    moment = _moment(planted["tokens"])
    root = nulls.moment_root(moment)
    n_latents = planted["sae"].W_dec.shape[0]
    fake_p, subspace_p, covariance_p = [], [], []
    for seed in range(6):
        fake = next(align.fake_dictionaries(root, n_latents, 1, torch.Generator().manual_seed(100 + seed)))
        result = align.site_alignment(planted["svd"], 0, fake, 3, 64, seed, moment, n_fakes=9)
        fake_p.append(float(((result.fake_statistic[:, 0] >= float(result.statistic[0])).sum() + 1) / 10))
        subspace_p.append(float(align.monte_carlo_p(result.statistic, result.nulls["subspace"])[0][0]))
        covariance_p.append(float(align.monte_carlo_p(result.statistic, result.nulls["covariance"])[0][0]))
    assert np.median(fake_p) > 0.2 and min(subspace_p) > 0.05
    assert np.median(covariance_p) < 0.1  # the covariance null is mostly fooled here: the control is not optional


def test_monte_carlo_p_counts_both_tails_with_the_observation():
    statistic = torch.tensor([4.5, 9.5, 0.0])
    null = torch.arange(10.0)  # 0, 1, …, 9
    high, low = align.monte_carlo_p(statistic, null)
    np.testing.assert_allclose(high, [6 / 11, 1 / 11, 11 / 11])
    np.testing.assert_allclose(low, [6 / 11, 11 / 11, 2 / 11])
    per_head = align.monte_carlo_p(statistic[:2], torch.stack([null, null + 1.0]))[0]  # [head, samples]
    np.testing.assert_allclose(per_head, [6 / 11, 2 / 11])


def test_a_planted_positional_head_is_flagged_and_a_feature_head_is_not(planted):
    """Windows of 16 tokens whose inputs carry a position code in 2 directions: a head reading those directions is
    positional (its top singular vectors lie in the positional subspace) and loses its alignment once the subspace
    is projected out; the planted feature head is neither."""
    generator = torch.Generator().manual_seed(7)
    windows, length = len(planted["tokens"]) // 16, 16
    code, _ = torch.linalg.qr(torch.randn(D_MODEL, 2, generator=generator, dtype=torch.float64))
    angle = torch.arange(length, dtype=torch.float64) / length * 2 * torch.pi
    position = 3.0 * torch.stack([angle.cos(), angle.sin()], -1) @ code.T  # [pos, d]: a circle in 2 directions
    x = planted["tokens"].double().reshape(windows, length, D_MODEL) + position
    basis = align.position_basis(x.reshape(-1, D_MODEL).float(), length, 4)
    assert basis.shape == (D_MODEL, 4)
    torch.testing.assert_close(code @ code.T @ basis[:, :2], basis[:, :2], atol=0.02, rtol=0)  # found the code
    positional = qk_svd((code * 2.0).float()[None, None], code.float()[None, None])
    positional_svd = ModelSVD(positional, torch.tensor([0]), torch.zeros(1, 1, 1, dtype=torch.float64), False)
    decoder = torch.cat([planted["sae"].W_dec.detach(), code.T.float()])  # a dictionary that holds the code too
    for svd, expected in ((positional_svd, True), (planted["svd"], False)):
        result = align.site_alignment(svd, 0, decoder, 2, 64, 0, position=basis)
        share = float(result.positional_share[0])
        assert (share > 0.5) is expected and (share > 0.99 if expected else share < 0.3)  # measured 1.000, 0.225
        upper = float(torch.quantile(result.null_without_position.double(), 0.99))
        assert (float(result.statistic_without_position[0]) > upper) is (not expected)
