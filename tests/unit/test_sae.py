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
from svalign.sae import align, attribution, dictionary, run
from svalign.sae.config import SAEConfig
from svalign.sae.corpus import build_corpus, corpus_digest, sample_text
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


def _planted_pairs(planted, coder, n_tokens: int = 256) -> dict:
    """Attribute the planted head's firing pairs through ``coder`` (an SAE or a :class:`PursuitCoder`)."""
    x = planted["tokens"][:n_tokens].reshape(-1, 16, D_MODEL)
    scores = torch.einsum("btd,de,bse->bts", x, planted["W_Q"] @ planted["W_K"].T, x).unsqueeze(1)
    inputs = LayerInputs(x, scores, torch.softmax(scores, -1))
    layer = type(planted["svd"].svd)(*(t[0] for t in planted["svd"].svd))
    options = {"causal": False, "offsets_used": False, "threshold": None, "skip_first_key": False}
    return attribution.attribute_pairs(inputs, coder, layer, [], **options)


def test_matching_pursuit_codes_k_distinct_atoms_with_a_shrinking_residual():
    """Non-negative, distinct atoms; each step's coefficient is the residual's correlation with its atom."""
    generator = torch.Generator().manual_seed(0)
    atoms = torch.randn(40, 8, generator=generator)
    coder = attribution.PursuitCoder(atoms / atoms.norm(dim=1, keepdim=True), torch.zeros(8), k=4)
    x = torch.randn(50, 8, generator=generator)
    acts, indices, _ = coder.encode(x)
    assert acts.shape == indices.shape == (50, 4) and (acts >= 0).all()
    assert all(len(set(row.tolist())) == 4 for row in indices)
    residual = x.clone()
    for step in range(4):  # the oracle: the greedy rule replayed token by token
        chosen = coder.W_dec[indices[:, step]]
        assert torch.allclose(acts[:, step], (residual * chosen).sum(-1).clamp_min(0), atol=1e-5)
        residual = residual - acts[:, step, None] * chosen
    assert (residual.norm(dim=1) <= x.norm(dim=1) + 1e-5).all()


def test_the_random_dictionary_control_sums_to_the_logit_and_does_not_match(planted):
    """Through a random dictionary of the SAE's size the split stays exact but the planted pairs do not match;
    the planted features themselves, coded the same way, do: the control can tell a dictionary from noise."""
    sae = planted["sae"]
    moment = planted["tokens"].double().T @ planted["tokens"].double() / len(planted["tokens"])
    quality = {"second_moment": moment.numpy()}
    random_coder = run.random_coders({0: (sae, quality)}, seed=0)[0]
    assert random_coder.W_dec.shape == sae.W_dec.shape and random_coder.k == sae.cfg.k
    learned = _planted_pairs(planted, sae)
    control = _planted_pairs(planted, random_coder)
    assert control["relative_error"].max() <= attribution.MAX_ATTRIBUTION_ERROR
    np.testing.assert_array_equal(control["t"], learned["t"])  # the same firing pairs, in the same order
    # measured: 0.47 vs 0.18 (chance 0.03): random directions where the data has energy match far above chance,
    # which is why the control, not chance, is the baseline
    assert learned["match"].mean() > 0.4 > 0.25 > control["match"].mean() > 2 * control["chance"].mean()
    assert np.nanmedian(learned["latent_share"]) > np.nanmedian(control["latent_share"])
    true_coder = attribution.PursuitCoder(planted["features"], torch.zeros(D_MODEL), k=sae.cfg.k)
    assert _planted_pairs(planted, true_coder)["match"].mean() > control["match"].mean() + 0.1


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
    library = {
        f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
        for f in dataclasses.fields(SAEConfig)
        if f.name != "sites"
    }
    assert set(properties) == set(library) | {"enabled", "sites"}
    for name, expected in library.items():
        assert properties[name]["default"] == (pytest.approx(expected) if not isinstance(expected, dict) else expected)
        for key, value in expected.items() if isinstance(expected, dict) else ():  # nested options: each default
            assert properties[name]["properties"][key]["default"] == value, f"{name}.{key}"
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


def test_windows_are_drawn_from_the_sampled_text_in_the_stated_share(minilm_bridge):
    """With a sampled part the windows split by ``share`` between the parts (a straddling one counts as docstrings),
    in a shuffled order; too few windows in one part fails naming the key."""
    tokenizer = minilm_bridge.tokenizer
    docstrings, sampled = build_corpus(["json"])["text"], build_corpus(["csv"])["text"]
    texts = [*docstrings, *sampled]
    boundary = len(tokenizer("[SEP]".join(docstrings), add_special_tokens=False)["input_ids"])  # ≈ the join
    _, starts, _ = dictionary.corpus_windows(tokenizer, texts, False, 16, 20, seed=0, sampled=(len(docstrings), 0.25))
    from_sampled = starts >= boundary - 14
    assert from_sampled.sum() == 5 and not from_sampled[:5].all()  # 25 %, and not in a block
    with pytest.raises(ValueError, match=r"the sampled text gives 45 windows .*sae\.sampled_text"):
        dictionary.corpus_windows(tokenizer, texts, False, 16, 400, seed=0, sampled=(len(docstrings), 0.9))


def test_sampled_text_is_seeded_text_of_the_model(smollm2_dir):
    first = sample_text(str(smollm2_dir), sequences=3, tokens=16, seed=0, batch=2)
    assert first == sample_text(str(smollm2_dir), sequences=3, tokens=16, seed=0, batch=2)
    assert first != sample_text(str(smollm2_dir), sequences=3, tokens=16, seed=1, batch=2)
    assert 1 <= len(first) <= 3 and all(len(text) >= 40 for text in first)


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


class _IdentityCoder:
    """An "SAE" that reconstructs its input exactly (its activations are the input itself)."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        return x, torch.zeros_like(x, dtype=torch.long), None

    def decode(self, acts: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return acts


def test_loss_recovered_splices_through_the_norm_and_matches_plain_transformers(smollm2_bridge, smollm2_dir):
    """An exact reconstruction recovers the whole loss (the norm's inverse is exact); a random SAE's spliced loss
    equals the same splice done in plain ``transformers`` (a pre-hook on the decoder layer, RMSNorm by hand)."""
    from transformers import AutoModelForCausalLM

    layer, tokens = 3, torch.randint(200, 5000, (2, 24), generator=torch.Generator().manual_seed(0))
    hooks = (f"blocks.{layer}.hook_in", f"blocks.{layer}.ln1.hook_normalized")
    mean = torch.zeros(576)
    exact = dictionary.loss_recovered(smollm2_bridge, tokens, hooks, _IdentityCoder(), mean, batch_sequences=1)
    assert exact["loss_sae"] == pytest.approx(exact["loss_clean"], rel=1e-5)
    assert exact["loss_recovered"] == pytest.approx(1.0, abs=1e-3) and exact["loss_ablated"] > exact["loss_clean"] + 1
    sparsify = dictionary._sparsify()
    torch.manual_seed(0)
    sae = sparsify.SparseCoder(576, sparsify.SparseCoderConfig(activation="topk", num_latents=256, k=8)).eval()
    ours = dictionary.loss_recovered(smollm2_bridge, tokens, hooks, sae, mean, batch_sequences=2)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    eps = model.config.rms_norm_eps

    def splice(module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        rms = hidden.pow(2).mean(-1, keepdim=True).add(eps).sqrt()
        with torch.no_grad():
            reconstruction = sae((hidden / rms).reshape(-1, 576)).sae_out.reshape(hidden.shape)
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": rms * reconstruction}
        return (rms * reconstruction, *args[1:]), kwargs

    handle = model.model.layers[layer].register_forward_pre_hook(splice, with_kwargs=True)
    try:
        with torch.no_grad():
            oracle = model(input_ids=tokens, labels=tokens).loss
    finally:
        handle.remove()
    assert ours["loss_sae"] == pytest.approx(float(oracle), rel=1e-4)
    assert ours["loss_sae"] > ours["loss_clean"]
