"""Token read-outs and SAD examples (svalign.explorer.readouts) on a tiny RoPE decoder and on the real MiniLM.

The read-outs are checked against a brute-force pass (every position's projection, sorted), the embedding inputs
against the model's own head input at layer 0, and the examples' recomputed terms against the SAD stage's ℓ̃ (the
library checks that itself; a wrong pairing of prompt, head or positions would fail it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from svalign import io, pipeline, tables
from svalign.dynamics.config import DynamicsConfig
from svalign.dynamics.task import build_tokenizer
from svalign.explorer import readouts
from svalign.explorer.readouts import PromptSetInput, ReadoutOptions, TopPositions, embedding_inputs, select_examples
from svalign.sad import forward
from svalign.sad.config import SADConfig

SAD_OPTIONS = SADConfig(threshold=None, skip_first_key=False, null_draws=1, null_seed=0, chunk_prompts=2)
SVD_CONFIG = {"max_offset": 15, "precision": "float32", "max_recon_error": 1e-5}
OPTIONS = ReadoutOptions(readout_directions=3, n_tokens=4, context_tokens=2, n_examples=3, chunk_prompts=2)


def tiny_llama(directory):
    """A 2-layer Llama (GQA, RoPE) with randomised norm gains, and the word-level tokenizer t0 … t31."""
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        vocab_size=35,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() == 1:
                    parameter.add_(0.5 * torch.randn(parameter.shape))
    model.save_pretrained(str(directory))
    build_tokenizer(DynamicsConfig(vocab_size=32, seq_len=64, max_period=16)).save_pretrained(str(directory))
    return directory


def through_sad(entry: dict, out, prompt_set: str, params: dict, texts=None):
    """extract_weights -> svd -> sad of the trained variant as the rules run them; returns what the explorer reads."""
    step, model = pipeline.weights_step(entry, "trained", 0)
    io.write_step(step, {"weights": out / "weights.parquet"})
    weights = pipeline.read_weights(out / "weights.parquet")
    paths = {name: out / f"{name}.parquet" for name in ("svd", "bases", "pairs", "summary", "prompts")}
    io.write_step(pipeline.svd_step(weights, entry["name"], "trained", SVD_CONFIG, "cpu"), paths)
    model_svd = pipeline.read_svd(paths["svd"], paths["bases"])
    keys = {"model": entry["name"], "variant": "trained", "prompt_set": prompt_set}
    io.write_step(pipeline.sad_step(model, weights, model_svd, keys, SAD_OPTIONS, params, texts), paths)
    pairs = io.read_table(paths["pairs"], tables.SAD_PAIRS, columns=readouts.EXAMPLE_PAIR_COLUMNS)
    return model, weights, model_svd, pairs


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The tiny Llama through SAD on 5 prompts of two lengths (two batches, chunks of 2: three forward passes)."""
    out = tmp_path_factory.mktemp("llama")
    directory = tiny_llama(out / "model")
    generator = torch.Generator().manual_seed(0)
    texts = [" ".join(f"t{int(w)}" for w in torch.randint(32, (n,), generator=generator)) for n in (9, 9, 9, 12, 12)]
    model, weights, model_svd, pairs = through_sad(
        {"name": "tiny", "source": str(directory)}, out, "repeated", {}, texts
    )
    batches, _ = forward.tokenize_prompts(model.tokenizer, texts, weights.causal, model.cfg.n_ctx)
    sets = {"repeated": PromptSetInput(batches, readouts.pairs_frame(pairs, "repeated"))}
    return model, weights, model_svd, sets, readouts.run_readouts(model, weights, model_svd, sets, OPTIONS)


def brute_force_projections(model, weights, model_svd, batches) -> dict:
    """Every (layer, head, k, side) projection at every position: value, prompt, position (one forward per batch)."""
    out = {}
    U, V = model_svd.svd.U()[:, :, 0], model_svd.svd.V()[:, :, 0]  # [L, H, d_in, r]
    for batch in batches:
        cache, _ = forward.layer_activations(model, batch.tokens, weights)
        for layer in range(weights.n_layers):
            inputs = forward.layer_inputs(cache, layer, weights, model_svd.augmented)
            for side, vectors in (("query", U), ("key", V)):
                projection = torch.einsum("bpd,hdk->hkbp", inputs.x, vectors[layer])
                for head, k in np.ndindex(*projection.shape[:2]):
                    for (b, position), value in np.ndenumerate(projection[head, k].numpy()):
                        key = (layer, head, k, side)
                        out.setdefault(key, []).append((value, int(batch.prompt[b]), position))
    return out


def test_context_readouts_are_the_highest_and_lowest_projections_over_every_position(llama):
    model, weights, model_svd, sets, (columns, _, _) = llama
    rows = pd.DataFrame(columns)
    context = rows[rows["source"] == "context"]
    expected = brute_force_projections(model, weights, model_svd, sets["repeated"].batches)
    assert len(context) == weights.n_layers * weights.n_heads * 3 * 2 * 2 * OPTIONS.n_tokens
    for (layer, head, k, side), values in expected.items():
        if k >= 3:
            continue
        part = context[(context["layer"] == layer) & (context["head"] == head) & (context["rank"] == k)]
        part = part[part["side"] == side]
        ranked = sorted(values, key=lambda v: -v[0])
        for pole, chosen in (("high", ranked[: OPTIONS.n_tokens]), ("low", ranked[::-1][: OPTIONS.n_tokens])):
            got = part[part["pole"] == pole].sort_values("order")
            np.testing.assert_allclose(got["value"], [v[0] for v in chosen], rtol=1e-5, atol=1e-6)
            at = {(prompt, position): value for value, prompt, position in values}  # ties (layer 0: same token)
            found = [at[key] for key in zip(got["prompt"], got["position"], strict=True)]  # may come in any order
            np.testing.assert_allclose(found, got["value"], rtol=1e-5, atol=1e-6)
            assert len(set(zip(got["prompt"], got["position"], strict=True))) == len(got)


def test_context_rows_name_their_token_in_context(llama):
    model, _, _, _, (columns, _, token_columns) = llama
    rows = pd.DataFrame(columns)
    context = rows[rows["source"] == "context"].iloc[0]
    ids = dict(zip(token_columns["prompt"], token_columns["token_ids"], strict=True))[context["prompt"]]
    assert context["token_id"] == ids[context["position"]]
    assert context["token"] == model.tokenizer.decode([context["token_id"]])
    assert f"⟦{context['token'].strip()}⟧" in context["context"]
    assert token_columns["prompt"] == list(range(5)) and len(token_columns["tokens"][3]) == 12


def test_examples_are_the_top_attention_pairs_with_their_terms_at_their_own_offset(llama):
    _, _, model_svd, sets, (_, example_columns, _) = llama
    examples = pd.DataFrame({k: list(v) if np.ndim(v) > 1 else v for k, v in example_columns.items()})
    pairs = sets["repeated"].pairs
    assert examples.groupby(["layer", "head"]).size().max() <= OPTIONS.n_examples
    for (layer, head), chosen in examples.groupby(["layer", "head"]):
        own = pairs[(pairs["layer"] == layer) & (pairs["head"] == head)]
        assert chosen["attention"].is_monotonic_decreasing
        assert chosen["attention"].iloc[0] == own["attention"].max()
    contributions = np.stack(examples["contributions"].to_numpy())
    np.testing.assert_allclose(contributions.sum(-1), examples["ltilde"], rtol=1e-4, atol=1e-4)
    assert (examples["offset"] == examples["t"] - examples["j"]).all()  # RoPE: each pair reads its own Ω_δ
    assert contributions.shape[1] == model_svd.svd.S.shape[-1]


def test_examples_from_other_prompts_than_the_sad_run_fail_loudly(llama):
    model, weights, model_svd, sets, _ = llama
    batches = sets["repeated"].batches
    shuffled = [forward.PromptBatch(b.tokens.flip(0), b.prompt, b.io_token, b.s_token) for b in batches]
    wrong = {"repeated": PromptSetInput(shuffled, sets["repeated"].pairs)}
    with pytest.raises(ArithmeticError, match=r"--forcerun sad explorer_readouts"):
        readouts.run_readouts(model, weights, model_svd, wrong, OPTIONS)


def test_embedding_inputs_are_the_head_input_layer_0_sees(llama):
    model, weights, _, _, _ = llama
    ids = torch.arange(3, 35)
    _, cache = model.run_with_cache(ids[:, None], names_filter=lambda name: name == "blocks.0.ln1.hook_normalized")
    expected = cache["blocks.0.ln1.hook_normalized"][:, 0]  # a RoPE model's first position: no position embedding
    torch.testing.assert_close(embedding_inputs(model, weights, ids), expected, rtol=1e-5, atol=1e-5)


def test_embedding_readouts_rank_the_vocabulary(llama):
    model, weights, model_svd, _, (columns, _, _) = llama
    rows = pd.DataFrame(columns)
    embedding = rows[(rows["source"] == "embedding") & (rows["layer"] == 1) & (rows["head"] == 2)]
    vocab = readouts.vocabulary(model.tokenizer, 35)
    assert not set(embedding["token_id"]) & set(model.tokenizer.all_special_ids)
    u = model_svd.svd.U()[1, 2, 0, :, 0]
    projection = embedding_inputs(model, weights, vocab) @ u
    high = embedding[(embedding["rank"] == 0) & (embedding["side"] == "query") & (embedding["pole"] == "high")]
    np.testing.assert_allclose(high["value"], projection.sort(descending=True).values[: OPTIONS.n_tokens], rtol=1e-5)


def test_top_positions_merge_chunks_like_one_sort():
    rng = np.random.default_rng(0)
    top = TopPositions(n_layers=1, n_heads=2, k=1, n=3)
    chunks = [rng.normal(size=(2, 2, 1, 2, 5)) for _ in range(3)]  # [side, head, k, b, pos]
    for index, chunk in enumerate(chunks):
        first = top.add(0, torch.tensor([2 * index, 2 * index + 1]), 5)
        top.update(0, torch.tensor(chunk, dtype=torch.float32).flatten(-2), first)
    everything = np.concatenate([c.reshape(2, 2, 1, -1) for c in chunks], -1)  # positions in global order
    for side, head in np.ndindex(2, 2):
        values = everything[side, head, 0]
        np.testing.assert_allclose(top.values[0, head, 0, side, 0], np.sort(values)[::-1][:3], rtol=1e-6)
        np.testing.assert_allclose(top.values[0, head, 0, side, 1], np.sort(-values)[::-1][:3], rtol=1e-6)
        assert top.index[0, head, 0, side, 0].tolist() == np.argsort(-values)[:3].tolist()
    assert top.refs[17].tolist() == [0, 3, 2]  # chunk 1 (from 10), its second prompt (index 3), position 2


def test_select_examples_caps_each_key_token():
    pairs = pd.DataFrame(
        {
            "layer": [0] * 6 + [1],
            "head": 0,
            "attention": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
            "ltilde": 1.0,
            "prompt": range(7),
        }
    )
    key = np.array([5, 5, 5, 6, 7, 8, 5])
    chosen = select_examples(pairs, key, n=3, per_key_token=2)
    assert chosen["prompt"].tolist() == [0, 1, 3, 6]  # the third pair keyed on token 5 is skipped
    assert chosen["example"].tolist() == [0, 1, 2, 0]


@pytest.mark.slow
def test_minilm_readouts_and_examples_validate_against_their_schemas(tmp_path):
    """The real encoder (biases: x̃ = [x, 1]; [CLS]/[SEP]; no offsets) through readouts_step and the schemas."""
    entry = {"name": "minilm", "source": "minilm"}
    model, weights, model_svd, pairs = through_sad(entry, tmp_path, "ioi", {"n_ioi_prompts": 4, "prompt_seed": 0})
    sets = {"ioi": PromptSetInput.read(model, weights, model_svd, "ioi", {"n_ioi_prompts": 4, "prompt_seed": 0}, pairs)}
    keys = {"model": "minilm", "variant": "trained"}
    step = readouts.readouts_step(model, weights, model_svd, sets, OPTIONS, keys, io.provenance("explorer_readouts"))
    paths = {name: tmp_path / f"{name}_explorer.parquet" for name in ("readouts", "examples", "tokens")}
    io.write_step(step, paths)
    examples = io.to_frame(io.read_table(paths["examples"], tables.EXPLORER_EXAMPLES))
    assert (examples["offset"] == 0).all() and len(examples) == 72 * OPTIONS.n_examples
    tokens = io.read_table(paths["tokens"], tables.EXPLORER_TOKENS).to_pandas()
    assert all(t[0] == "[CLS]" and t[-1] == "[SEP]" for t in tokens["tokens"])
    # the head input of layer 0 is the embedding module's output: position 1 of "[CLS] v [SEP]"
    ids = torch.tensor([[101, v, 102] for v in (2198, 2984, 3075)])
    _, cache = model.run_with_cache(ids, names_filter=lambda name: name == "blocks.0.attn.q.hook_in")
    expected = cache["blocks.0.attn.q.hook_in"][:, 1]
    torch.testing.assert_close(embedding_inputs(model, weights, ids[:, 1], position=1), expected)
    assert isinstance(io.read_table(paths["readouts"], tables.EXPLORER_READOUTS), pa.Table)


def test_readout_options_defaults_are_the_schemas(repo):
    import dataclasses

    import yaml

    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema["properties"]["explorer"]["properties"]
    for field in dataclasses.fields(ReadoutOptions):
        if field.name != "chunk_prompts":  # the SAD stage's sad.chunk_prompts
            assert properties[field.name]["default"] == field.default, field.name
