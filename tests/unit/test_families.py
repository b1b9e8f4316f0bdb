"""Every model family through extract_weights -> svd -> sad, checked against an independent oracle.

For each family a tiny randomly initialised model (2 layers, small widths, the family's structural options on:
GQA, q/k biases, partial or interleaved rotary, sliding windows shorter than the prompts, soft-capping, per-head
q/k norms, ``head_dim ≠ d_model / n_heads``, ``query_pre_attn_scalar``, …; every norm gain and bias randomised so
that folding them matters) is saved as a local directory and run through the library steps the rules call
(:mod:`svalign.pipeline`, through Parquet), exactly as a downloaded model would be. The SAD terms are then summed
for every head, query and allowed key and compared with the logits of :mod:`attention_oracle` (plain
``transformers``, no transformer-lens, no svalign), and K(t) with the model's own mask. Families that cannot be
supported must fail at extract_weights with a message naming family and reason.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from attention_oracle import oracle_logits
from conftest import ORACLE_ERROR
from transformers import PreTrainedTokenizerFast

from svalign import io, pipeline
from svalign.dynamics.config import DynamicsConfig, dynamics_models
from svalign.dynamics.scores import dynamics_sad_columns
from svalign.dynamics.task import build_tokenizer, prompts_columns
from svalign.families import UnsupportedFamilyError
from svalign.heads import RotarySpec
from svalign.io import provenance, read_table, to_frame, write_table
from svalign.sad import decompose, forward
from svalign.sad.config import SADConfig
from svalign.tables import DYNAMICS_PROMPTS, DYNAMICS_SAD, SAD_SUMMARY

pytestmark = pytest.mark.slow

VOCAB = 32  # ordinary tokens t0 … t31 of the word-level tokenizer (ids 3 … 34)
N_POS = 12  # prompt length: longer than every sliding window below
N_PROMPTS = 3
TOLERANCE = 1e-4
TOKEN_IDS = {"vocab_size": VOCAB + 3, "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}
DECODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "initializer_range": 0.2,  # logits of order 1, so patterns are far from uniform
    **TOKEN_IDS,
}
GEMMA3_ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
}
ALTERNATING = {"sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]}
# Rescaled RoPE with an original context (16) shorter than max_position_embeddings, so every rope type's rescaling
# moves the frequencies the 12-token prompts use (with the default 8192 the smallest widths would hide it).
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
    "rope_theta": 500000.0,
}
YARN_ROPE = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 10000.0}
LONGROPE = {
    "rope_type": "longrope",
    "short_factor": [1.0, 1.5, 2.0, 3.0],
    "long_factor": [1.0, 4.0, 8.0, 16.0],
    "original_max_position_embeddings": 16,
    "rope_theta": 10000.0,
}
HEAD_NORMALIZED, HEAD_RESIDUAL = "blocks.{layer}.ln1.hook_normalized", "blocks.{layer}.attn.hook_in"

GPT2_LIKE = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "initializer_range": 0.2, **TOKEN_IDS}
OPT = {
    "hidden_size": 32,
    "ffn_dim": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "word_embed_proj_dim": 32,
    "init_std": 0.2,
    **TOKEN_IDS,
}
FALCON = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}
FALCON |= {"initializer_range": 0.2, "alibi": False, **TOKEN_IDS}
SCALE_24 = 24**0.5  # √query_pre_attn_scalar, not √head_dim = 4


class Family(NamedTuple):
    """A tiny model of one family with its traps switched on, and what extract_weights must record for it."""

    config_class: str
    model_class: str
    options: dict
    facts: dict  # HeadWeights attribute -> expected value (a callable for the rotary spec)


FAMILIES = {
    "gpt2": Family("GPT2Config", "GPT2LMHeadModel", GPT2_LIKE, {"architecture": "gpt2", "rotary": None}),
    "gpt_neox": Family(  # Pythia: 25 % rotary, q/k biases, parallel attention (d_mlp ≠ d_model: docs/models.md)
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {**DECODER, "hidden_size": 64, "intermediate_size": 256, "rotary_pct": 0.25, "use_parallel_residual": True},
        {"rotary": RotarySpec(4, 10000.0)},
    ),
    "llama": Family("LlamaConfig", "LlamaForCausalLM", {**DECODER, "num_key_value_heads": 2}, {"b_Q": None}),
    "llama3": Family(  # Llama 3.x: rope_type llama3 rescales the low frequencies (through the bridge)
        "LlamaConfig",
        "LlamaForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "rope_parameters": LLAMA3_ROPE},
        {"architecture": "llama", "b_Q": None},
    ),
    "llama_linear": Family(
        "LlamaConfig",
        "LlamaForCausalLM",
        {**DECODER, "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}},
        {"architecture": "llama"},
    ),
    "llama_dynamic": Family(  # length-dependent: exact within max_position_embeddings, which is recorded
        "LlamaConfig",
        "LlamaForCausalLM",
        {**DECODER, "rope_parameters": {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0}},
        {"architecture": "llama"},
    ),
    "qwen2_yarn": Family(  # YaRN: rescaled frequencies and a factor on cos and sin
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "rope_parameters": YARN_ROPE},
        {"architecture": "qwen2"},
    ),
    "phi3_longrope": Family(  # LongRoPE: short factors within the original context, a factor on cos and sin
        "Phi3Config",
        "Phi3ForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "rope_parameters": LONGROPE, "original_max_position_embeddings": 16},
        {"architecture": "phi3"},
    ),
    "qwen2": Family(  # q/k biases with RoPE and GQA
        "Qwen2Config", "Qwen2ForCausalLM", {**DECODER, "num_key_value_heads": 2}, {"sliding_window": ()}
    ),
    "qwen2_sliding": Family(  # use_sliding_window: layers from max_window_layers on slide
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
        {"architecture": "qwen2", "sliding_window": (0, 4)},
    ),
    "mistral": Family(
        "MistralConfig",
        "MistralForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "sliding_window": 4},
        {"sliding_window": (4, 4)},
    ),
    "gemma": Family(  # head_dim ≠ d_model / n_heads, (1 + w) RMSNorm gain, multi-query
        "GemmaConfig",
        "GemmaForCausalLM",
        {**DECODER, "num_key_value_heads": 1, "head_dim": 16},
        {"attn_scale": 4.0},
    ),
    "gemma2": Family(
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {
            **DECODER,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "query_pre_attn_scalar": 24,
            "attn_logit_softcapping": 5.0,
            **ALTERNATING,
        },
        {"attn_scale": SCALE_24, "softcap": 5.0, "sliding_window": (4, 0)},
    ),
    "phi3": Family(  # fused qkv, partial rotary, sliding window
        "Phi3Config",
        "Phi3ForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "partial_rotary_factor": 0.5, "sliding_window": 5},
        {"rotary": RotarySpec(4, 10000.0), "sliding_window": (5, 5)},
    ),
    "phi": Family(
        "PhiConfig", "PhiForCausalLM", {**DECODER, "partial_rotary_factor": 0.5}, {"rotary": RotarySpec(4, 10000.0)}
    ),
    "opt": Family("OPTConfig", "OPTForCausalLM", OPT, {"rotary": None, "head_input_hook": HEAD_NORMALIZED}),
    "opt_post_ln": Family(  # OPT-350m style: the attention reads the residual stream
        "OPTConfig",
        "OPTForCausalLM",
        {**OPT, "do_layer_norm_before": False},
        {"architecture": "opt", "head_input_hook": HEAD_RESIDUAL},
    ),
    "gptj": Family(
        "GPTJConfig",
        "GPTJForCausalLM",
        {**GPT2_LIKE, "rotary_dim": 4},
        {"rotary": RotarySpec(4, 10000.0, "interleaved")},
    ),
    "qwen3": Family(  # per-head q/k RMSNorm
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "head_dim": 16},
        {"qk_norm": "per_head"},
    ),
    "olmo2": Family(  # q/k RMSNorm over all heads, no input norm
        "Olmo2Config",
        "Olmo2ForCausalLM",
        {**DECODER, "num_key_value_heads": 2},
        {"qk_norm": "all_heads", "head_input_hook": HEAD_RESIDUAL},
    ),
    "gemma3": Family(  # per-head (1 + w) q/k norms, local/global layers with their own RoPE base
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {
            **DECODER,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "query_pre_attn_scalar": 24,
            "rope_parameters": GEMMA3_ROPE,
            **ALTERNATING,
        },
        {
            "architecture": "gemma3_text",
            "qk_norm": "per_head",
            "attn_scale": SCALE_24,
            "sliding_window": (4, 0),
            "rotary": RotarySpec(16, 10000.0, "rotate_half", (10000.0, 1000000.0)),
        },
    ),
    "smollm3": Family(  # every other layer without RoPE (NoPE): its R_δ is the identity
        "SmolLM3Config",
        "SmolLM3ForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "no_rope_layers": [1, 0]},
        {},
    ),
    "mixtral": Family(  # mixture-of-experts MLP, GQA, sliding window
        "MixtralConfig",
        "MixtralForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "num_local_experts": 2, "num_experts_per_tok": 1, "sliding_window": 5},
        {"sliding_window": (5, 5)},
    ),
    "qwen2_moe": Family(  # q/k biases, experts and a shared expert
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        {
            **DECODER,
            "num_key_value_heads": 2,
            "num_experts": 2,
            "num_experts_per_tok": 1,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32,
        },
        {},
    ),
    "qwen3_moe": Family(  # per-head q/k RMSNorm with experts
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {
            **DECODER,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "num_experts": 2,
            "num_experts_per_tok": 1,
            "moe_intermediate_size": 32,
        },
        {"qk_norm": "per_head"},
    ),
    "olmoe": Family(  # q/k RMSNorm over all heads, experts
        "OlmoeConfig",
        "OlmoeForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "num_experts": 2, "num_experts_per_tok": 1},
        {"qk_norm": "all_heads"},
    ),
    "granite": Family(  # attention_multiplier replaces 1/√d_head
        "GraniteConfig",
        "GraniteForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "attention_multiplier": 0.3, "residual_multiplier": 0.5},
        {"attn_scale": 1 / 0.3},
    ),
    "stablelm": Family(  # LayerNorm γ, β; partial rotary; q/k/v biases; parallel residual
        "StableLmConfig",
        "StableLmForCausalLM",
        {
            **DECODER,
            "num_key_value_heads": 2,
            "partial_rotary_factor": 0.5,
            "use_qkv_bias": True,
            "use_parallel_residual": True,
        },
        {"rotary": RotarySpec(4, 10000.0)},
    ),
    "cohere": Family(  # LayerNorm without bias, interleaved rotary with θ from the config, parallel block
        "CohereConfig",
        "CohereForCausalLM",
        {**DECODER, "num_key_value_heads": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0}},
        {"rotary": RotarySpec(8, 5000.0, "interleaved")},
    ),
    "falcon": Family(  # Falcon 7B: multi-query, parallel attention and MLP on one LayerNorm, rotary, own attention code
        "FalconConfig",
        "FalconForCausalLM",
        {**FALCON, "multi_query": True, "parallel_attn": True, "bias": True},
        {},
    ),
    "falcon_new_architecture": Family(  # Falcon 40B/180B: grouped key heads in per-group qkv rows, ln_attn
        "FalconConfig",
        "FalconForCausalLM",
        {**FALCON, "new_decoder_architecture": True, "num_kv_heads": 2, "num_ln_in_parallel_attn": 2},
        {"architecture": "falcon"},
    ),
    "gpt_bigcode": Family(  # StarCoder: multi-query (one key head), fused c_attn, learned positions
        "GPTBigCodeConfig", "GPTBigCodeForCausalLM", GPT2_LIKE, {"rotary": None}
    ),
    "gpt_bigcode_mha": Family(  # a k and v per head: c_attn's rows are q, k, v per head
        "GPTBigCodeConfig",
        "GPTBigCodeForCausalLM",
        {**GPT2_LIKE, "multi_query": False},
        {"architecture": "gpt_bigcode"},
    ),
    "bert": Family(
        "BertConfig",
        "BertModel",
        {k: v for k, v in DECODER.items() if k not in ("bos_token_id", "eos_token_id")},
        {"causal": False},
    ),
}


def save_tiny_model(
    directory, config_class: str, model_class: str, options: dict, seed: int = 0, config_dtype: str = "float16"
) -> Path:
    """A randomly initialised model with every 1-D parameter (norm gains, biases) randomised, and the word-level
    tokenizer, saved as a Hugging Face directory whose config names ``config_dtype`` (half precision, as the Hub's
    configs of Pythia and most recent models do; the weights themselves are float32)."""
    import transformers

    config = getattr(transformers, config_class)(**options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_class)(config).eval()
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() == 1:  # HF inits gains to 1 (Gemma: 0) and biases to 0: folding would be trivial
                    parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(str(directory))
    config_file = Path(directory) / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "dtype": config_dtype}, indent=2))
    build_tokenizer(DynamicsConfig(vocab_size=VOCAB, seq_len=64, max_period=16)).save_pretrained(str(directory))
    return directory


def _prompts() -> list[str]:
    generator = torch.Generator().manual_seed(0)
    words = torch.randint(VOCAB, (N_PROMPTS, N_POS), generator=generator)
    return [" ".join(f"t{int(w)}" for w in row) for row in words]


def _config_section(repo, name: str) -> dict:
    return yaml.safe_load((repo / "config.yaml").read_text())[name]


def _through_the_pipeline(entry: dict, repo, out: Path, texts: list[str], variant: str = "trained"):
    """extract_weights -> svd -> sad as the rules run them (Parquet in between, files under ``out``).

    Returns:
        (the loaded model, its HeadWeights, its ModelSVD, the SAD step's tables).
    """
    name, out = entry["name"], Path(out)
    step, model = pipeline.weights_step(entry, variant, 0)
    if type(model.tokenizer).__name__ == "Qwen2Tokenizer":  # transformers 5 picks it for model_type qwen2, whatever
        # tokenizer class was saved: give the tiny model back its word-level tokenizer
        model.tokenizer = PreTrainedTokenizerFast.from_pretrained(entry["source"])
    io.write_step(step, {"weights": out / "weights.parquet"})
    weights = pipeline.read_weights(out / "weights.parquet")
    svd_config = {**_config_section(repo, "svd"), "max_offset": N_POS - 1}
    paths = {name: out / f"{name}.parquet" for name in ("svd", "bases", "pairs", "summary", "prompts")}
    io.write_step(pipeline.svd_step(weights, name, variant, svd_config, "cpu"), paths)
    model_svd = pipeline.read_svd(paths["svd"], paths["bases"])
    sad_options = {**_config_section(repo, "sad"), "null_draws": 1}
    sad_options = {k: v for k, v in sad_options.items() if k not in ("prompt_sets", "n_ioi_prompts", "prompt_seed")}
    keys = {"model": name, "variant": variant, "prompt_set": "repeated"}
    sad_config = SADConfig.from_mapping(sad_options)
    sad = pipeline.sad_step(model, weights, model_svd, keys, sad_config, {}, texts)  # asserts its own score check
    io.write_step(sad, paths)
    return model, weights, model_svd, sad


def _relative_errors(model, weights, model_svd, model_dir) -> list[float]:
    """Per layer: max over heads of max |Σ_k a_k / attn_scale − oracle| / max |oracle| over allowed pairs; asserts
    that K(t) is the model's own mask."""
    batches, _ = forward.tokenize_prompts(model.tokenizer, _prompts(), weights.causal, model.cfg.n_ctx)
    tokens = batches[0].tokens
    cache, _ = forward.layer_activations(model, tokens, weights)
    errors = []
    for layer, oracle in enumerate(oracle_logits(model_dir, tokens)):
        window = weights.window(layer)
        allowed = decompose.allowed_keys(tokens.shape[1], weights.causal, window=window)
        assert torch.equal(oracle.allowed, allowed.expand_as(oracle.allowed)), f"layer {layer}: K(t) differs"
        inputs = forward.layer_inputs(cache, layer, weights, model_svd.augmented)
        terms = inputs.terms(decompose.layer_svd(model_svd, layer), weights.causal, model_svd.uses_offsets)
        ours = terms.sum(-1).double() / weights.attn_scale  # [b, h, t, j]: the oracle's scaled, pre-cap logits
        mask = oracle.allowed[:, None]
        difference = ((ours - oracle.logits) * mask).abs().amax(dim=(0, 2, 3))
        scale = (oracle.logits * mask).abs().amax(dim=(0, 2, 3))
        errors.append(float((difference / scale).max()))
    return errors


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sad_terms_sum_to_the_oracle_logits_and_keys_are_the_models_mask(family, repo, tmp_path, record_property):
    """The error of every family is printed in pytest's terminal summary (tests/conftest.py)."""
    spec = FAMILIES[family]
    model_dir = save_tiny_model(tmp_path / family, spec.config_class, spec.model_class, spec.options)
    entry = {"name": family, "source": str(model_dir)}  # a `models:` entry with a local directory
    model, weights, model_svd, sad = _through_the_pipeline(entry, repo, tmp_path, _prompts())
    errors = _relative_errors(model, weights, model_svd, model_dir)
    record_property(ORACLE_ERROR, max(errors))
    expected = {"architecture": family, **spec.facts}
    assert {name: getattr(weights, name) for name in expected} == expected
    if family in ("gpt_bigcode", "falcon"):  # multi-query: every query head reads the one key head
        assert weights.kv_head.tolist() == [0, 0, 0, 0]
    if family == "falcon_new_architecture":  # two key groups of two query heads
        assert weights.kv_head.tolist() == [0, 0, 1, 1]
    assert sad.record["config"]["max_score_error"] < TOLERANCE  # the run's own check against the model's scores
    assert max(errors) < TOLERANCE, errors


def test_sliding_window_keys_and_relative_attention_over_them():
    """K(t) = t − w < j ≤ t (w keys, as transformers masks it); relative attention averages over those keys only."""
    allowed = decompose.allowed_keys(5, causal=True, window=2)
    rows = [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]
    assert allowed.int().tolist() == rows
    assert decompose.key_counts(allowed, torch.int64).tolist() == [1, 2, 2, 2, 2]
    scores = torch.tensor([[1.0, 0, 0], [2.0, 4.0, 0], [0, 3.0, 7.0]]).view(1, 1, 3, 3)
    rel = decompose.relative(scores, causal=True, window=2)[0, 0]
    assert rel[2, 2].item() == 7.0 - 3.0 and rel[2, 1].item() == 3.0 - 7.0  # key 0 is outside K(2)
    with pytest.raises(ValueError, match="causal attention only"):
        decompose.allowed_keys(3, causal=False, window=2)


# --------------------------------------------------------------------------------------------------
# Refusals: at extract_weights, naming the family and the reason
# --------------------------------------------------------------------------------------------------

REFUSED = {
    "bloom_alibi": (
        Family("BloomConfig", "BloomForCausalLM", {"hidden_size": 32, "n_layer": 2, "n_head": 4, **TOKEN_IDS}, {}),
        r"model family 'bloom' is not supported: ALiBi adds a per-head linear position bias",
    ),
    "gpt2_inverse_layer_scaling": (
        Family("GPT2Config", "GPT2LMHeadModel", {**GPT2_LIKE, "scale_attn_by_inverse_layer_idx": True}, {}),
        r"model family 'gpt2' is not supported: scale_attn_by_inverse_layer_idx divides layer L's logits by L \+ 1",
    ),
    "phi_qk_layernorm": (
        Family("PhiConfig", "PhiForCausalLM", {**DECODER, "qk_layernorm": True}, {}),
        r"model family 'phi' is not supported: qk_layernorm applies a LayerNorm with a bias to q and k",
    ),
    "falcon_alibi": (
        Family("FalconConfig", "FalconForCausalLM", {**FALCON, "alibi": True}, {}),
        r"model family 'falcon' is not supported: ALiBi adds a per-head linear position bias",
    ),
    "unverified_family": (
        Family("CodeGenConfig", "CodeGenForCausalLM", {**GPT2_LIKE, "rotary_dim": 4}, {}),
        r"model family 'codegen' is not supported: not a verified family \(verified: bert, cohere, ",
    ),
    "stablelm_qk_layernorm": (
        Family("StableLmConfig", "StableLmForCausalLM", {**DECODER, "qk_layernorm": True}, {}),
        r"model family 'stablelm' is not supported: qk_layernorm applies per-head LayerNorms with biases",
    ),
    "cohere_qk_norm": (
        Family("CohereConfig", "CohereForCausalLM", {**DECODER, "use_qk_norm": True}, {}),
        r"model family 'cohere' is not supported: use_qk_norm applies per-head LayerNorms \(centred\)",
    ),
}


@pytest.mark.parametrize("family", ["llama3", "qwen2_yarn", "phi3_longrope", "smollm3"])
def test_rescaled_rope_needs_the_models_own_frequencies(family, repo, tmp_path, record_property):
    """The frequencies (and YaRN/LongRoPE's factor on cos and sin; SmolLM3's NoPE layers) come from the model: with
    the θ-only frequencies the same SAD terms miss the oracle's logits by far more than the tolerance."""
    import dataclasses

    from svalign.svd import model_svd as build_svd

    spec = FAMILIES[family]
    model_dir = save_tiny_model(tmp_path / family, spec.config_class, spec.model_class, spec.options)
    model, weights, ours, _ = _through_the_pipeline(
        {"name": family, "source": str(model_dir)}, repo, tmp_path, _prompts()
    )
    rotary = weights.rotary
    theta_only = RotarySpec(rotary.dim, rotary.base, rotary.style)
    gap = max(float((rotary.frequencies_of(i) - theta_only.frequencies_of(i)).abs().max()) for i in range(2))
    plain = dataclasses.replace(weights, rotary=theta_only)
    wrong = max(_relative_errors(model, plain, build_svd(plain, N_POS - 1), model_dir))
    right = max(_relative_errors(model, weights, ours, model_dir))
    record_property("frequency_gap", gap)
    record_property("theta_only_error", wrong)
    assert gap > 1e-2 or rotary.attention_factors  # the rescaling moves the frequencies or scales cos and sin
    assert right < TOLERANCE < 1e-2 < wrong, (right, wrong)
    if family == "smollm3":  # the NoPE layer rotates nothing
        assert rotary.frequencies_of(1).abs().max() == 0 and rotary.frequencies_of(0).abs().min() > 0
    if family == "qwen2_yarn":
        assert rotary.attention_factors == (pytest.approx(0.1 * np.log(4.0) + 1),) * 2
    if family == "phi3_longrope":  # exact within the original context only: longer prompts are refused
        assert (
            rotary.max_length == 16
            and rotary.attention_factors == (pytest.approx((1 + np.log(4) / np.log(16)) ** 0.5),) * 2
        )
        tokens = torch.zeros(1, 17, dtype=torch.long)
        with pytest.raises(ValueError, match=r"17 tokens exceeds 16, the original context of this model's"):
            forward.layer_activations(model, tokens, weights)


def test_unknown_rope_types_are_refused_naming_the_type():
    from types import SimpleNamespace

    from svalign.families import check_supported

    config = SimpleNamespace(
        model_type="llama", num_hidden_layers=2, rope_parameters={"rope_type": "su_scaled", "rope_theta": 1e4}
    )
    with pytest.raises(UnsupportedFamilyError, match=r"rope_type 'su_scaled' \(layer 0\) is not one whose"):
        check_supported(config)


@pytest.mark.parametrize("case", list(REFUSED))
def test_unsupported_family_fails_at_extract_weights_naming_family_and_reason(case, tmp_path):
    spec, message = REFUSED[case]
    model_dir = save_tiny_model(tmp_path / case, spec.config_class, spec.model_class, spec.options)
    for variant in ("trained", "random"):
        with pytest.raises(UnsupportedFamilyError, match=message):
            pipeline.weights_step({"name": case, "source": str(model_dir)}, variant, 0)


# --------------------------------------------------------------------------------------------------
# Random-init twins and an external dynamics series
# --------------------------------------------------------------------------------------------------


def test_random_twin_of_a_transformers_family_is_seeded_and_checked(repo, tmp_path):
    """The twin of a family read from transformers modules: the class's own init, seeded, through the same checks."""
    spec = FAMILIES["qwen3"]
    entry = {"name": "qwen3", "source": str(save_tiny_model(tmp_path / "qwen3", *spec[:3]))}
    _, twin, _, sad = _through_the_pipeline(entry, repo, tmp_path, _prompts(), variant="random")
    again, _ = pipeline.weights_step(entry, "random", 0)
    other, _ = pipeline.weights_step(entry, "random", 1)
    trained, _ = pipeline.weights_step(entry, "trained", 0)
    W_Q = {name: step.tables["weights"][1]["W_Q"] for name, step in (("again", again), ("other", other))}
    assert (W_Q["again"] == twin.W_Q.reshape(len(W_Q["again"]), *twin.W_Q.shape[2:]).numpy()).all()
    assert not (W_Q["other"] == W_Q["again"]).all()
    assert not (trained.tables["weights"][1]["W_Q"] == W_Q["again"]).all()
    assert sad.record["config"]["max_score_error"] < TOLERANCE


PYTHIA_SHAPED = {  # GPT-NeoX as in Pythia: 25 % partial rotary, q/k biases, parallel attention and MLP
    **DECODER,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "rotary_pct": 0.25,
    "use_parallel_residual": True,
    "tie_word_embeddings": False,
}


def test_external_gpt_neox_series_runs_the_dynamics_stage(repo, tmp_path):
    """`dynamics.checkpoints` as three local directories of a Pythia-shaped series, through the steps rule
    dynamics_checkpoint runs per checkpoint, then the dynamics_sad table (the tracked head given, as an external
    series has no induction scores)."""
    series = tmp_path / "pythia-tiny"
    steps = (0, 1000, 2000)
    sources = [
        str(save_tiny_model(series / f"step{step}", "GPTNeoXConfig", "GPTNeoXForCausalLM", PYTHIA_SHAPED, seed))
        for seed, step in enumerate(steps)
    ]
    checkpoints = dynamics_models({"checkpoints": sources}, "unused")
    assert [(c["step"], c["ours"]) for c in checkpoints.values()] == [(step, False) for step in steps]
    task = DynamicsConfig(vocab_size=VOCAB, seq_len=N_POS, min_period=3, max_period=6)
    prompt_table = write_table(
        tmp_path / "sad_prompts.parquet", DYNAMICS_PROMPTS, prompts_columns(task, 4, 0), provenance("test")
    )
    texts = pipeline.repeated_texts(prompt_table)  # the repeated prompt set, as rule dynamics_prompts writes it
    summaries = {}
    for name, checkpoint in checkpoints.items():
        out = tmp_path / name
        out.mkdir()
        entry = {"name": name, **{k: checkpoint[k] for k in ("source", "revision", "config_key")}}  # model_params
        _through_the_pipeline(entry, repo, out, texts)
        summaries[name] = to_frame(read_table(out / "summary.parquet", SAD_SUMMARY))
    head = {"layer": 1, "head": 2}
    columns = dynamics_sad_columns(summaries, checkpoints, None, head)
    path = write_table(tmp_path / "sad.parquet", DYNAMICS_SAD, columns, provenance("test"))
    table = to_frame(read_table(path, DYNAMICS_SAD))
    chosen = table[table["chosen"]]
    assert chosen["step"].tolist() == list(steps) and (chosen["series"] == "external").all()
    assert (chosen["n_pairs"] > 0).all() and chosen["median_sparseness"].between(0, 1).all()
    assert table["induction_score"].isna().all()  # no task scores for an external series


@pytest.mark.parametrize("config_dtype", ["float16", "bfloat16"])
def test_random_twin_is_float32_whatever_dtype_the_config_names(config_dtype, repo, tmp_path):
    """The Hub's Pythia config says float16; the random twin (from_config) used to follow it into half precision and
    fail SAD's score check. Every variant loads in float32."""
    model_dir = save_tiny_model(
        tmp_path / "pythia", "GPTNeoXConfig", "GPTNeoXForCausalLM", PYTHIA_SHAPED, config_dtype=config_dtype
    )
    entry = {"name": "pythia", "source": str(model_dir)}
    model, _, _, sad = _through_the_pipeline(entry, repo, tmp_path, _prompts(), variant="random")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert sad.record["config"]["max_score_error"] < TOLERANCE


# --------------------------------------------------------------------------------------------------
# The paper's models by Hub name, from a Hugging Face cache without network
# --------------------------------------------------------------------------------------------------


def cache_model(cache: Path, name: str, revision: str, model_dir: Path) -> str:
    """Put ``model_dir`` into a Hub cache as ``name`` at ``revision``, in huggingface_hub's layout
    (``models--OWNER--NAME/refs/REVISION`` → commit, ``snapshots/COMMIT/`` the files); returns the commit."""
    commit = hashlib.sha1(f"{name}@{revision}@{model_dir}".encode()).hexdigest()
    repo = cache / f"models--{name.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit


@pytest.fixture
def paper_cache(tmp_path, monkeypatch):
    """A Hub cache holding GPT-2-small-shaped ``gpt2`` at main and Pythia-shaped ``EleutherAI/pythia-160m`` at two
    revisions (tiny random models, configs naming float16 as the Hub's do), with HF_HUB_OFFLINE=1."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gpt2 = save_tiny_model(tmp_path / "gpt2", "GPT2Config", "GPT2LMHeadModel", GPT2_LIKE)
    commits = {("gpt2", "main"): cache_model(cache, "gpt2", "main", gpt2)}
    for seed, revision in enumerate(("step1000", "step143000")):
        pythia = save_tiny_model(tmp_path / revision, "GPTNeoXConfig", "GPTNeoXForCausalLM", PYTHIA_SHAPED, seed)
        commits["EleutherAI/pythia-160m", revision] = cache_model(cache, "EleutherAI/pythia-160m", revision, pythia)
    return cache, commits


def test_paper_models_resolve_by_name_and_revision_from_the_cache(paper_cache):
    from svalign import hub, models

    cache, commits = paper_cache
    for (name, revision), commit in commits.items():
        assert hub.cached_snapshot(name, revision) == commit  # what the Snakefile puts in the jobs' params
        path = models.resolve_model_dir(name, revision if revision != "main" else None, key=f"models.{name}.source")
        assert path == cache / f"models--{name.replace('/', '--')}" / "snapshots" / commit
    assert hub.cached_revisions("EleutherAI/pythia-160m") == ["step1000", "step143000"]
    expected = r"holds it at revisions step1000, step143000, not step2000.*`hf download EleutherAI/pythia-160m --revi"
    with pytest.raises(models.ModelNotAvailableError, match=expected):
        models.resolve_model_dir("EleutherAI/pythia-160m", "step2000", key="models.pythia.source")
    with pytest.raises(models.ModelNotAvailableError, match=r"it is not in the HF cache"):
        models.resolve_model_dir("EleutherAI/pythia-410m", None, key="models.pythia410.source")


@pytest.mark.parametrize(
    ("name", "revision"),
    [("gpt2", None), ("EleutherAI/pythia-160m", "step143000"), ("EleutherAI/pythia-160m", "step1000")],
)
@pytest.mark.parametrize("variant", ["trained", "random"])
def test_paper_models_from_the_cache_pass_sad(paper_cache, name, revision, variant, repo, tmp_path):
    """Trained and random-init variants of the cached models through weights → SVD → SAD, offline."""
    entry = {"name": "paper", "source": name, "revision": revision}
    model, _, _, sad = _through_the_pipeline(entry, repo, tmp_path / "out", _prompts(), variant=variant)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert sad.record["config"]["max_score_error"] < TOLERANCE


def test_softcap_distortion_of_a_capped_model_equals_a_float64_oracle(repo, tmp_path):
    """A tiny Gemma 2 capped at 2.0: per head, the largest and the median |ℓ̃_post − ℓ̃_pre| ÷ max |ℓ̃_pre| over its
    firing pairs, recomputed in float64 from the model's own pre-cap logits (transformers' eager attention) with a
    per-pair loop over the keys, equal the SAD summary's."""
    spec = FAMILIES["gemma2"]
    model_dir = save_tiny_model(
        tmp_path / "capped", spec.config_class, spec.model_class, {**spec.options, "attn_logit_softcapping": 2.0}
    )
    _, weights, _, sad = _through_the_pipeline({"name": "capped", "source": str(model_dir)}, repo, tmp_path, _prompts())
    assert weights.softcap == 2.0
    pairs = pd.DataFrame({k: sad.tables["pairs"][1][k] for k in ("layer", "head", "prompt", "t", "j")})
    summary = pd.DataFrame({k: v for k, v in sad.tables["summary"][1].items() if np.ndim(v) == 1})
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    tokens = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"] for text in _prompts()])
    largest = []
    for layer, oracle in enumerate(oracle_logits(model_dir, tokens)):
        pre = oracle.logits.numpy()
        post = 2.0 * np.tanh(pre / 2.0)
        for head in range(weights.n_heads):
            rows = pairs[(pairs["layer"] == layer) & (pairs["head"] == head)]
            errors, scales = [], []
            for prompt, t, j in rows[["prompt", "t", "j"]].itertuples(index=False):
                keys = np.flatnonzero(oracle.allowed[prompt, t].numpy())
                others = keys[keys != j]
                relative_pre = pre[prompt, head, t, j] - pre[prompt, head, t, others].mean()
                relative_post = post[prompt, head, t, j] - post[prompt, head, t, others].mean()
                errors.append(abs(relative_post - relative_pre))
                scales.append(abs(relative_pre))
            row = summary[(summary["layer"] == layer) & (summary["head"] == head)].iloc[0]
            ratio = np.array(errors) / max(scales)
            assert row["softcap_max_distortion"] == pytest.approx(ratio.max(), rel=1e-4, abs=1e-6)
            assert row["softcap_median_distortion"] == pytest.approx(np.median(ratio), rel=1e-4, abs=1e-6)
            largest.append(ratio.max())
    assert max(largest) > 0.3  # a cap of 2.0 bends these logits a lot: the check is not of zeros
