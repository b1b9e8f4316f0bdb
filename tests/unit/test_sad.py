"""SAD: hand-made statistics, the null, rank-one heads, prompt handling, the config, and the decomposition of real
models against the per-pair oracle."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sad_oracle
import sad_pairs
import torch
import yaml

from svalign import io, tables
from svalign.config import ConfigError
from svalign.sad import decompose, forward, prompts, run
from svalign.sad.config import SADConfig
from svalign.svd import HeadSVD, model_svd, qk_svd

PROMPT_KEYS = {"prompt_sets", "n_ioi_prompts", "prompt_seed"}  # the sad section's keys that choose prompts


def test_schema_defaults_equal_library_defaults(repo):
    """The schema documents the defaults; SADConfig must use the same ones (prompt-set keys aside)."""
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema["properties"]["sad"]["properties"]
    library = {f.name: f.default for f in dataclasses.fields(SADConfig)}
    assert set(properties) == set(library) | PROMPT_KEYS and not set(library) & PROMPT_KEYS
    for name, expected in library.items():
        assert properties[name]["default"] == (list(expected) if isinstance(expected, tuple) else expected), name


def test_config_from_mapping_rejects_unknown_keys():
    assert SADConfig.from_mapping({"null_draws": 2}) == SADConfig(null_draws=2)
    with pytest.raises(ValueError, match=r"unknown keys \['n_ioi_prompts'\]"):
        SADConfig.from_mapping({"threshold": 0.5, "n_ioi_prompts": 8})


def test_allowed_keys_and_their_counts():
    causal = decompose.allowed_keys(3, causal=True)
    assert causal.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert decompose.key_counts(causal, torch.float32).tolist() == [1.0, 2.0, 3.0]
    assert decompose.allowed_keys(3, causal=False).all()
    assert decompose.key_counts(decompose.allowed_keys(3, causal=False), torch.int64).tolist() == [3, 3, 3]


def test_n_recon_counts_the_largest_terms_needed():
    c = torch.tensor(
        [
            [3.0, 0.5, -0.5, 0.0],  # ℓ̃ = 3: the largest term alone
            [1.0, 1.0, 1.0, -1.0],  # ℓ̃ = 2: two terms
            [2.0, 2.0, -1.0, -1.0],  # ℓ̃ = 2: one term reaches it
            [0.5, 0.5, 0.5, 0.5],  # ℓ̃ = 2: all four
            [1.0, -2.0, 0.0, 0.0],  # ℓ̃ = −1: undefined
        ]
    )
    assert decompose.n_recon(c, c.sum(-1)).tolist() == [1, 2, 1, 4, -1]


def test_n_recon_orderings_differ_where_large_terms_cancel():
    """signed takes the largest c_k first (the authors' rule), magnitude the largest |c_k| with their signs."""
    c = torch.tensor(
        [
            [1.0, -1.5, 1.2, 0.8],  # ℓ̃ = 1.5: signed 1.2 + 1.0; magnitude −1.5 + 1.2 + 1.0 + 0.8
            [2.0, -3.0, 2.5, 0.5],  # ℓ̃ = 2: signed 2.5; magnitude −3 + 2.5 + 2 + 0.5
            [3.0, 0.5, -0.5, 0.0],  # ℓ̃ = 3: the largest term alone either way
            [0.4, -2.0, 1.5, 1.0],  # ℓ̃ = 0.9: signed 1.5; magnitude −2 + 1.5 + 1 + 0.4 (last term)
            [1.0, -1.0, 0.5, 0.0],  # |c| tie: the larger σ (rank 0) first, so magnitude needs one term
            [1.0, -2.0, 0.0, 0.0],  # ℓ̃ = −1: undefined in both
        ]
    )
    target = c.sum(-1)
    assert decompose.n_recon(c, target, "signed").tolist() == [2, 1, 1, 1, 1, -1]
    assert decompose.n_recon(c, target, "magnitude").tolist() == [4, 4, 1, 4, 1, -1]
    assert decompose.n_recon(c, target).tolist() == decompose.n_recon(c, target, "signed").tolist()
    with pytest.raises(ValueError, match="unknown N_recon order 'abs'"):
        decompose.n_recon(c, target, "abs")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numpy_and_torch_orderings_give_the_same_rows(dtype):
    """The CPU path sorts with numpy (an int64 key for |c_k| with the rank as tie-break); torch is the reference."""
    generator = torch.Generator().manual_seed(0)
    c = torch.randn(500, 16, generator=generator, dtype=dtype).round(decimals=1)  # many equal |c_k| and ±c pairs
    c[:50, :8] = 0.0  # runs of zeros, signed zeros
    c[50:60, 3] = -0.0
    for order in ("signed", "magnitude"):
        fast = decompose.ordered_terms(c, order, use_numpy=True)
        reference = decompose.ordered_terms(c, order, use_numpy=False)
        assert fast.dtype == dtype and torch.equal(fast, reference), order
        assert torch.equal(fast.sort(-1).values, c.sort(-1).values)  # a permutation of each row


@pytest.mark.parametrize("window", [None, 3])
def test_causal_rope_terms_read_offsets_through_strided_views(window):
    """The strided-view path of causal RoPE layers equals the per-pair gather of each offset's SVD."""
    generator = torch.Generator().manual_seed(1)
    heads, offsets, d, rank, pos = 2, 9, 6, 3, 7
    svd = HeadSVD(
        torch.randn(heads, d, rank, generator=generator),
        torch.randn(heads, d, rank, generator=generator),
        torch.rand(heads, offsets, rank, generator=generator),
        torch.randn(heads, offsets, rank, rank, generator=generator),
        torch.randn(heads, offsets, rank, rank, generator=generator),
    )
    x = torch.randn(4, pos, d, generator=generator)
    terms = decompose.decompose(x, svd, causal=True, offsets_used=True, window=window)
    p = torch.einsum("btd,hdr->bhtr", x, svd.basis_q)
    q = torch.einsum("btd,hdr->bhtr", x, svd.basis_k)
    gathered = decompose._offset_terms(p, q, svd)  # the bidirectional path, by gathers, as the reference
    allowed = decompose.allowed_keys(pos, True, window=window)[None, None, :, :, None]
    torch.testing.assert_close(terms, gathered * allowed, rtol=1e-5, atol=1e-6)
    assert (terms[~allowed.expand_as(terms)] == 0).all()


def test_summary_fills_the_plain_n_recon_columns_from_the_configured_ordering():
    pairs = {
        "layer": np.zeros(4, int),
        "head": np.zeros(4, int),
        "sparseness": np.full(4, 0.5, np.float32),
        "top_rank": np.array([0, 1, 2, 3]),
        "null_sparseness": np.full((4, 2), 0.6, np.float32),
        "share_by_rank": np.zeros((1, 1, 4)),
        "null_share_by_rank": np.zeros((1, 1, 4)),
        "prompt": np.array([0, 0, 1, 1]),
        "ltilde": np.ones(4, np.float32),
        "null_n_recon": np.ones((4, 2), int),
    }
    sad_pairs.with_nulls(pairs)  # only the Haar null ran
    signed, magnitude = np.array([1, 1, 2, -1]), np.array([4, 3, 4, -1])
    for order, plain in (("signed", signed), ("magnitude", magnitude)):
        pairs.update(n_recon_signed=signed, n_recon_magnitude=magnitude, n_recon_order=order, n_recon=plain)
        pairs.update(null_n_recon_signed=np.ones((4, 2), int), null_n_recon_magnitude=np.full((4, 2), 2))
        pairs["null_n_recon"] = pairs[f"null_n_recon_{order}"]
        summary = run.summarize(pairs, 4, {"model": "m", "variant": "trained", "prompt_set": "ioi"})
        assert summary["n_recon_order"] == [order]
        assert summary["median_n_recon"] == [float(np.median(plain[:3]))]
        assert summary["median_n_recon_signed"] == [1.0] and summary["median_n_recon_magnitude"] == [4.0]
        assert summary["frac_n_recon_le4_magnitude"] == [1.0] and summary["null_median_n_recon_magnitude"] == [2.0]
        assert summary["frac_top_lower_half"] == [0.5] and summary["n_nonpositive"] == [1]
        assert summary["null_prompt_share_sparser"] == [1.0]  # both prompts: 0.5 real below 0.6 null
        assert np.isnan(summary["null_p_sparser"][0]) and summary["null_sparser_bh"] == [False]  # no own draws
        assert np.isnan(summary["subspace_null_median_sparseness"][0])
        assert summary["covariance_null_denser_bh"] == [False]


def test_config_checks_the_n_recon_order():
    assert SADConfig().n_recon_order == "signed"
    with pytest.raises(ValueError, match=r"sad\.n_recon_order: 'abs'"):
        SADConfig(n_recon_order="abs")


def test_n_recon_rounding_absorbs_float_noise():
    c = torch.tensor([[0.7, 0.3 - 1e-7, 1e-7]], dtype=torch.float64)
    assert decompose.n_recon(c, c.sum(-1)).tolist() == [2]


def test_rolls_tovee_sparseness_bounds():
    r = 8
    one_hot = torch.zeros(1, r)
    one_hot[0, 3] = 5.0
    flat = torch.full((1, r), -2.0)
    half = torch.tensor([[1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(decompose.rolls_tovee(one_hot), torch.tensor([1 / r]))
    torch.testing.assert_close(decompose.rolls_tovee(flat), torch.tensor([1.0]))
    torch.testing.assert_close(decompose.rolls_tovee(half), torch.tensor([0.5]))


def test_relative_attention_subtracts_the_mean_of_the_other_allowed_keys():
    scores = torch.tensor([[1.0, 0.0, 0.0], [2.0, 4.0, 0.0], [3.0, 0.0, 6.0]]).view(1, 1, 3, 3)
    rel = decompose.relative(scores, causal=True)[0, 0]
    assert rel[1, 0] == pytest.approx(2.0 - 4.0) and rel[1, 1] == pytest.approx(4.0 - 2.0)
    assert rel[2, 2] == pytest.approx(6.0 - 1.5) and rel[2, 1] == pytest.approx(0.0 - 4.5)
    bidirectional = decompose.relative(torch.tensor([[1.0, 2.0, 6.0]]).view(1, 1, 1, 3), causal=False)[0, 0, 0]
    torch.testing.assert_close(bidirectional, torch.tensor([1.0 - 4.0, 2.0 - 3.5, 6.0 - 1.5]))


def test_rank_one_head_on_aligned_inputs_needs_one_term():
    """Ω = 3 u vᵀ (+ small noise in other directions): queries along u, keys along v fire with N_recon = 1."""
    d = 6
    eye = torch.eye(d)
    W_Q = torch.stack([3.0 * eye[0], 0.05 * eye[2], 0.04 * eye[4]], 1)  # [d, r]
    W_K = torch.stack([eye[1], eye[3], eye[5]], 1)
    svd = qk_svd(W_Q[None], W_K[None])
    layer = HeadSVD(*(t for t in svd))  # [head=1, …]
    tokens = torch.stack([eye[1] * 2, eye[3], eye[5], eye[0] * 2 + 0.1 * eye[2]])  # last token queries along u
    x = tokens.unsqueeze(0)  # [1, pos, d]
    terms = decompose.decompose(x, layer, causal=True, offsets_used=False)
    scores = torch.einsum("btd,de,fe,bsf->bts", x, W_Q, W_K, x)
    assert decompose.check_scores(terms, scores.unsqueeze(1), True, 1e-6, layer=0) < 1e-6
    pattern = torch.softmax(scores.masked_fill(~torch.ones(4, 4, dtype=torch.bool).tril(), -1e9), -1).unsqueeze(1)
    stats = decompose.pair_statistics(terms, pattern, causal=True, threshold=None, skip_first_key=False)
    fired = (stats.t == 3) & (stats.j == 0)
    assert fired.sum() == 1  # the query attends to the key along v
    assert stats.n_recon[fired].item() == 1 and stats.top_rank[fired].item() == 0
    assert stats.sparseness[fired].item() < 0.5


def test_ioi_prompts_alternate_orders_and_cover_templates():
    generated = prompts.ioi_prompts(48, seed=3)
    assert {p.order for p in generated} == {"ABBA", "BABA"}
    assert len({p.template for p in generated}) == len(prompts.IOI_TEMPLATES) >= 10
    for p in generated:
        assert p.io_name != p.s_name and p.text.count(p.s_name) == 2 and p.text.endswith(" to")
        first = p.text.index(p.io_name) < p.text.index(p.s_name)
        assert first == (p.order == "ABBA")
    assert prompts.ioi_prompts(5, seed=3) == generated[:5]
    assert len(prompts.PLAIN_TEXT) >= 64


def test_prompt_sets_take_the_repeated_texts_from_the_caller():
    texts, answers = prompts.prompt_set("repeated", repeated=["t1 t2 t1 t2", "t3 t4 t3 t4"])
    assert texts == ["t1 t2 t1 t2", "t3 t4 t3 t4"] and answers is None
    assert prompts.prompt_set("plain", **{}) == (list(prompts.PLAIN_TEXT), None)
    ioi = prompts.prompt_set("ioi", **{"n_ioi_prompts": 4, "prompt_seed": 2})
    assert ioi[0] == [p.text for p in prompts.ioi_prompts(4, 2)] and len(ioi[1]) == 4
    with pytest.raises(ValueError, match="dynamics series only"):
        prompts.prompt_set("repeated")
    with pytest.raises(ValueError, match="unknown prompt set 'ioj'"):
        prompts.prompt_set("ioj")


def test_ioi_logit_difference_reads_the_answer_tokens():
    last_logits = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.5, -1.0]])
    diff = forward.ioi_logit_diff(last_logits, torch.tensor([2, 0]), torch.tensor([1, 2]))
    assert diff == [2.0, 3.0]


def test_prompt_errors_are_clear(minilm_bridge):
    tokenizer = minilm_bridge.tokenizer
    with pytest.raises(ValueError, match="empty"):
        forward.tokenize_prompts(tokenizer, [], False, 512)
    with pytest.raises(ValueError, match="more than the model's context of 8"):
        forward.tokenize_prompts(tokenizer, ["a sentence that is far too long for a tiny context"], False, 8)
    with pytest.raises(ValueError, match=r"prompt 1 \(' '\) has 0 token\(s\); a prompt needs at least 2"):
        forward.tokenize_prompts(tokenizer, ["two words", " "], True, 512)  # causal: no special tokens
    with pytest.raises(ValueError, match="splits every IOI prompt's names into several tokens"):
        forward.tokenize_prompts(tokenizer, ["When Xqzzyx and Wbrrg met"], False, 512, [("Xqzzyx", "Wbrrg")])


def _run(bridge, weights, max_offset, n=6):
    texts, answers = prompts.prompt_set("ioi", n, 0)
    batches, kept = forward.tokenize_prompts(bridge.tokenizer, texts, weights.causal, bridge.cfg.n_ctx, answers)
    result = model_svd(weights, max_offset=max_offset)
    pairs, diagnostics = run.run_sad(
        bridge, weights, result, batches, SADConfig(null_draws=2, n_recon_order="magnitude")
    )
    return pairs, diagnostics, kept


def test_minilm_decomposition_sums_to_model_scores(minilm_bridge, minilm_weights):
    pairs, diagnostics, kept = _run(minilm_bridge, minilm_weights, 0)
    assert diagnostics["max_score_error"] < 1e-4
    assert len(kept) == 6 and len(pairs["layer"]) > 1000
    assert set(np.unique(pairs["layer"])) == set(range(6)) and pairs["null_n_recon"].shape[1] == 2
    defined = pairs["n_recon"] > 0
    assert ((pairs["n_recon"][defined] >= 1) & (pairs["n_recon"][defined] <= 32)).all()
    assert ((pairs["sparseness"] >= 1 / 32 - 1e-6) & (pairs["sparseness"] <= 1 + 1e-6)).all()
    assert (pairs["ltilde"][~defined] <= 0).all()
    # both orderings in every run; the configured one (magnitude here) fills the plain columns
    assert pairs["n_recon"] is pairs["n_recon_magnitude"] and pairs["null_n_recon"] is pairs["null_n_recon_magnitude"]
    assert ((pairs["n_recon_signed"] > 0) == defined).all()
    assert (pairs["n_recon_signed"] <= pairs["n_recon_magnitude"]).all()  # the n largest c_k: the largest n-sum


def test_smollm2_rope_decomposition_sums_to_model_scores(smollm2_bridge, smollm2):
    pairs, diagnostics, _ = _run(smollm2_bridge, smollm2, 24, n=4)
    assert diagnostics["max_score_error"] < 1e-4
    assert diagnostics["ioi_accuracy"] >= 0.75  # the model does the task
    assert len(pairs["layer"]) > 1000


def test_offsets_come_from_the_svd(minilm_weights, smollm2):
    assert not model_svd(minilm_weights, max_offset=5).uses_offsets  # no RoPE: δ = 0 only
    assert model_svd(smollm2, max_offset=2).uses_offsets


def test_too_few_rope_offsets_fail_with_the_key_before_any_computation(smollm2_bridge, smollm2):
    texts, _ = prompts.prompt_set("plain")
    batches, _ = forward.tokenize_prompts(smollm2_bridge.tokenizer, texts[:2], True, smollm2_bridge.cfg.n_ctx)
    result = model_svd(smollm2, max_offset=3)
    with pytest.raises(ConfigError, match=r"svd\.max_offset: 3 is below"):
        run.run_sad(None, smollm2, result, batches, SADConfig())  # no model: it fails before the forward pass


def test_vectorised_statistics_equal_the_per_pair_reference_loop(minilm_bridge, minilm_weights):
    texts, answers = prompts.prompt_set("ioi", 3, 1)
    batches, _ = forward.tokenize_prompts(minilm_bridge.tokenizer, texts, False, minilm_bridge.cfg.n_ctx, answers)
    result = model_svd(minilm_weights)
    cache, _ = forward.layer_activations(minilm_bridge, batches[0].tokens, minilm_weights)
    layer = 3
    x = decompose.augment_inputs(cache[minilm_weights.head_input_hook.format(layer=layer)], result.augmented)
    terms = decompose.decompose(x, decompose.layer_svd(result, layer), False, False)
    stats = decompose.pair_statistics(terms, cache[f"blocks.{layer}.attn.hook_pattern"], False, None, False)
    U, V, S = result.svd.U()[layer, :, 0].numpy(), result.svd.V()[layer, :, 0].numpy(), result.svd.S[layer, :, 0]
    keys = list(range(x.shape[1]))
    for index in np.random.default_rng(0).choice(len(stats.head), size=200, replace=False):
        prompt, head, t, j = (int(getattr(stats, n)[index]) for n in ("prompt", "head", "t", "j"))
        n, s, top = sad_oracle.reference_pair(x[prompt].numpy(), U[head], S[head].numpy(), V[head], t, j, keys)
        assert n == stats.n_recon[index].item()
        assert s == pytest.approx(stats.sparseness[index].item(), abs=1e-5)
        assert top == stats.top_rank[index].item()


def test_a_threshold_no_pair_reaches_leaves_empty_layers_not_a_crash(minilm_bridge, minilm_weights, tmp_path):
    """sad.threshold = 1.0 (the schema allows it): no pair fires anywhere; the tables are written, with no pairs and
    every head's statistics NaN (issue: a layer without firing pairs used to crash the job)."""
    texts, answers = prompts.prompt_set("ioi", 2, 0)
    batches, _ = forward.tokenize_prompts(minilm_bridge.tokenizer, texts, False, minilm_bridge.cfg.n_ctx, answers)
    result = model_svd(minilm_weights, max_offset=0)
    pairs, _ = run.run_sad(minilm_bridge, minilm_weights, result, batches, SADConfig(threshold=1.0, null_draws=2))
    assert len(pairs["layer"]) == 0 and pairs["null_n_recon"].shape == (0, 2)
    keys = {"model": "minilm", "variant": "trained", "prompt_set": "ioi"}
    summary = run.summarize(pairs, result.svd.S.shape[-1], keys)
    assert summary["n_pairs"] == [0] * 72 and np.isnan(summary["median_sparseness"]).all()
    io.write_table(tmp_path / "pairs.parquet", tables.SAD_PAIRS, run.pairs_table(pairs, keys), io.provenance("t"))
    io.write_table(tmp_path / "summary.parquet", tables.SAD_SUMMARY, summary, io.provenance("t"))
    stored = io.read_table(tmp_path / "pairs.parquet", tables.SAD_PAIRS)
    assert stored.num_rows == 0 and io.tensor(stored, "null_sparseness").shape == (0, 2)


def test_ioi_names_the_tokenizer_does_not_know_drop_their_prompt():
    """A word-level tokenizer maps an unknown name to its [UNK]: one token, but not the name; the prompt is dropped
    (logit(IO) − logit(S) between two unknown tokens means nothing)."""
    from svalign.dynamics.config import DynamicsConfig
    from svalign.dynamics.task import build_tokenizer

    tokenizer = build_tokenizer(DynamicsConfig(vocab_size=8))  # words t0 … t7, unknown words -> <unk>
    texts = ["t1 t2 t3 t4", "Mary t2 John t4"]
    batches, kept = forward.tokenize_prompts(tokenizer, texts, True, 64, [("t3", "t1"), ("Mary", "John")])
    assert kept == [0] and [b.prompt.tolist() for b in batches] == [[0]]
