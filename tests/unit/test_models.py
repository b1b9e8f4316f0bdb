"""Real-model weights: MiniLM against its checkpoint, SmolLM2 GQA and RoPE against the model's own scores,
random twins, and clear failures for Hub names offline, unknown names and directories without weights."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from safetensors.torch import load_file

from svalign import models
from svalign.svd import head_factors, rotary_matrices

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def minilm(minilm_weights):
    return minilm_weights


def test_minilm_weights_equal_the_raw_checkpoint(minilm):
    """BERT is post-LN: nothing is folded, W_Q/W_K/b_Q/b_K are the checkpoint's, per head."""
    raw = load_file(str(models.minilm_dir() / "model.safetensors"))
    assert minilm.W_Q.shape == (6, 12, 384, 32)
    for layer in (0, 3, 5):
        prefix = f"encoder.layer.{layer}.attention.self"
        for head in (0, 7, 11):
            columns = slice(32 * head, 32 * (head + 1))
            assert torch.equal(minilm.W_Q[layer, head], raw[f"{prefix}.query.weight"].T[:, columns])
            assert torch.equal(minilm.W_K[layer, head], raw[f"{prefix}.key.weight"].T[:, columns])
            assert torch.equal(minilm.b_Q[layer, head], raw[f"{prefix}.query.bias"][columns])
            assert torch.equal(minilm.b_K[layer, head], raw[f"{prefix}.key.bias"][columns])
    assert minilm.rotary is None and not minilm.causal and minilm.architecture == "bert"
    assert minilm.family == models.family_of("bert") and minilm.family.is_encoder
    assert minilm.attn_scale == pytest.approx(32**0.5)
    assert minilm.kv_head.tolist() == list(range(12))
    assert minilm.processing.startswith("none")


def test_minilm_augmented_form_reproduces_the_models_scores(minilm_bridge, minilm):
    """x̃ Ω̃ x̃ᵀ with Ω̃ = [W_Q; b_Q][W_K; b_K]ᵀ equals the model's own q·k (hook_q, hook_k)."""
    layer = 2
    names = {f"blocks.{layer}.attn.q.hook_in", f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"}
    _, cache = minilm_bridge.run_with_cache(["When Mary and John went to the store"], names_filter=names.__contains__)
    x = cache[f"blocks.{layer}.attn.q.hook_in"][0].double()  # [pos, d_model]
    x_aug = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], -1)
    A, B = head_factors(minilm)
    ours = torch.einsum("td,hde,hfe,sf->hts", x_aug, A[layer].double(), B[layer].double(), x_aug)
    q, k = cache[f"blocks.{layer}.attn.hook_q"][0].double(), cache[f"blocks.{layer}.attn.hook_k"][0].double()
    model = torch.einsum("the,she->hts", q, k)  # hook_q/hook_k are [batch, pos, head, d_head]
    torch.testing.assert_close(ours, model, rtol=1e-4, atol=1e-4 * model.abs().max().item())


def test_random_twin_is_seeded_and_untrained(minilm):
    twin = models.extract_head_weights(models.load_bridge(models.minilm_dir(), "random", seed=0))
    again = models.extract_head_weights(models.load_bridge(models.minilm_dir(), "random", seed=0))
    other = models.extract_head_weights(models.load_bridge(models.minilm_dir(), "random", seed=1))
    assert torch.equal(twin.W_Q, again.W_Q) and torch.equal(twin.W_K, again.W_K)
    assert not torch.equal(twin.W_Q, other.W_Q)
    assert twin.W_Q.shape == minilm.W_Q.shape
    # BERT's init: N(0, 0.02) weights, zero biases; the trained weights are much larger.
    assert twin.W_Q.std().item() == pytest.approx(0.02, rel=0.05)
    assert minilm.W_Q.std().item() > 2 * twin.W_Q.std().item()
    assert torch.count_nonzero(twin.b_Q) == 0


def test_smollm2_gqa_mapping_and_rotary_parameters(smollm2_dir, smollm2):
    raw = load_file(str(smollm2_dir / "model.safetensors"))
    assert smollm2.W_Q.shape == smollm2.W_K.shape == (30, 9, 576, 64)
    assert smollm2.kv_head.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert smollm2.rotary == models.RotarySpec(dim=64, base=100000.0, style="rotate_half")
    assert smollm2.b_Q is None and smollm2.causal and not smollm2.family.is_encoder
    layer = 4
    gain = raw[f"model.layers.{layer}.input_layernorm.weight"]  # folded into W_Q/W_K (compatibility mode)
    k_proj = raw[f"model.layers.{layer}.self_attn.k_proj.weight"].T  # [576, 3 * 64]
    q_proj = raw[f"model.layers.{layer}.self_attn.q_proj.weight"].T  # [576, 9 * 64]
    for head in range(9):
        kv = head // 3
        torch.testing.assert_close(smollm2.W_K[layer, head], gain[:, None] * k_proj[:, 64 * kv : 64 * (kv + 1)])
        torch.testing.assert_close(smollm2.W_Q[layer, head], gain[:, None] * q_proj[:, 64 * head : 64 * (head + 1)])


def test_smollm2_rope_omega_reproduces_the_models_scores(smollm2_bridge, smollm2):
    """x_t Ω_δ x_jᵀ / √d_head with Ω_δ = W_Q R_δ W_Kᵀ, δ = t − j, equals hook_attn_scores[t, j]."""
    layer = 7
    hooks = {f"blocks.{layer}.ln1.hook_normalized", f"blocks.{layer}.attn.hook_attn_scores"}
    tokens = smollm2_bridge.to_tokens("When Mary and John went to the store, John gave a drink to", prepend_bos=False)
    _, cache = smollm2_bridge.run_with_cache(tokens, names_filter=hooks.__contains__)
    x = cache[f"blocks.{layer}.ln1.hook_normalized"][0].double()  # the head input after norm folding
    scores = cache[f"blocks.{layer}.attn.hook_attn_scores"][0].double()  # [head, query, key], ÷ √d_head
    pairs = [(5, 5), (9, 4), (12, 0), (13, 2)]  # (t, j): offsets 0, 5, 12, 11
    offsets = torch.tensor([t - j for t, j in pairs], dtype=torch.float64)
    R = rotary_matrices(offsets, 64, smollm2.rotary.dim, smollm2.rotary.base)
    W_Q, W_K = smollm2.W_Q[layer].double(), smollm2.W_K[layer].double()
    for (t, j), R_delta in zip(pairs, R, strict=True):
        ours = torch.einsum("d,hde,ef,hgf,g->h", x[t], W_Q, R_delta, W_K, x[j]) / smollm2.attn_scale
        torch.testing.assert_close(ours, scores[:, t, j], rtol=1e-4, atol=1e-4 * scores[:, t, j].abs().max().item())
    # The bridge's own cfg.rotary_base (10000) would be wrong: the HF config's 100000 is what the model uses.
    wrong = rotary_matrices(offsets[1:2], 64, 64, 10000.0)[0]
    t, j = pairs[1]
    off = torch.einsum("d,hde,ef,hgf,g->h", x[t], W_Q, wrong, W_K, x[j]) / smollm2.attn_scale
    assert (off - scores[:, t, j]).abs().max() > 1e-2


def test_model_family_decides_every_architecture_dependent_choice():
    """One predicate for BERT-like encoders versus pre-norm decoders, instead of "bert" comparisons."""
    bert, llama = models.family_of("BERT"), models.family_of("llama")
    assert bert.is_encoder and not bert.causal and not bert.folds_norm and bert.scores_from_qk
    assert bert.head_input_hook == "blocks.{layer}.attn.q.hook_in" and bert.processing.startswith("none")
    assert not llama.is_encoder and llama.causal and llama.folds_norm and not llama.scores_from_qk
    assert llama.head_input_hook == "blocks.{layer}.ln1.hook_normalized" and "folded" in llama.processing
    assert models.family_of("gpt_neox") == models.family_of("GPT_NEOX") != llama


def test_hub_name_without_network_fails_fast_with_instructions(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "HUB_HOST", ("127.0.0.1", 9))  # nothing listens: like a machine without network
    start = time.perf_counter()
    with pytest.raises(models.ModelNotAvailableError) as error:
        models.resolve_model_dir("svalign-tests/no-such-model", "step143000", key="models.pythia.source")
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "models.pythia.source" in message and "--local-dir" in message and "--revision step143000" in message


def test_hub_name_with_hf_hub_offline_fails_immediately(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(models.ModelNotAvailableError, match="HF_HUB_OFFLINE"):
        models.resolve_model_dir("gpt2-svalign-test-not-cached", key="models.gpt2.source")
    assert time.perf_counter() - start < 5


def test_unknown_name_and_directory_without_weights_fail_clearly(tmp_path):
    with pytest.raises(models.ModelNotAvailableError, match="neither a built-in model"):
        models.resolve_model_dir("not a model!", key="models.x.source")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(models.ModelNotAvailableError, match="has no weights"):
        models.resolve_model_dir(str(tmp_path), key="models.x.source")
    with pytest.raises(models.ModelNotAvailableError, match=r"has no config\.json"):
        models.resolve_model_dir(str(tmp_path.parent), key="k")


def test_head_weights_table_roundtrip(minilm, tmp_path):
    from svalign import io, tables

    path = io.write_table(
        tmp_path / "w.parquet",
        tables.HEAD_WEIGHTS,
        models.head_weights_table(minilm, "minilm", "trained"),
        io.provenance("test"),
    )
    back = models.read_head_weights(io.read_table(path, tables.HEAD_WEIGHTS))
    assert torch.equal(back.W_Q, minilm.W_Q) and torch.equal(back.b_K, minilm.b_K)
    assert back.rotary is None and back.attn_scale == minilm.attn_scale and back.processing == minilm.processing


def test_external_dynamics_checkpoint_fails_fast_naming_its_config_key(monkeypatch):
    """A Pythia revision listed in dynamics.checkpoints goes through the same fail-fast path, naming that key."""
    from svalign.dynamics.config import dynamics_models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoints = dynamics_models(
        {"checkpoints": ["svalign-tests/pythia-like@step1000", "svalign-tests/pythia-like@step2000"]}, "unused"
    )
    assert [entry["step"] for entry in checkpoints.values()] == [1000, 2000]
    entry = {"name": "dyn_c001", **checkpoints["dyn_c001"]}
    start = time.perf_counter()
    with pytest.raises(models.ModelNotAvailableError, match=r"dynamics\.checkpoints\[1\]"):
        models.load_model(entry, "trained", seed=0)
    assert time.perf_counter() - start < 5


def test_hub_revision_without_safetensors_fetches_the_bin_weights(monkeypatch, tmp_path):
    """Older Pythia revisions ship only pytorch_model.bin: the snapshot is fetched again with the .bin patterns,
    and a revision with safetensors is fetched once, without them."""
    import huggingface_hub

    from svalign import models

    calls = []

    def fake_snapshot(name, revision=None, allow_patterns=(), **options):
        calls.append(list(allow_patterns))
        folder = tmp_path / f"{name.replace('/', '--')}-{revision}"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text("{}")
        if revision == "old" and "pytorch_model*.bin" in allow_patterns:
            (folder / "pytorch_model.bin").write_bytes(b"weights")
        if revision == "new":
            (folder / "model.safetensors").write_bytes(b"weights")
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    old = models._snapshot("EleutherAI/pythia-160m", "old", local_files_only=True)
    assert (old / "pytorch_model.bin").exists() and len(calls) == 2 and "pytorch_model*.bin" in calls[1]
    calls.clear()
    new = models._snapshot("EleutherAI/pythia-160m", "new")
    assert (new / "model.safetensors").exists() and len(calls) == 1 and "pytorch_model*.bin" not in calls[0]


def test_gguf_is_parsed_once_during_a_conversion_and_gguf_is_restored_after(tmp_path):
    import gguf

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", torch.arange(12, dtype=torch.float32).reshape(3, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    originals = gguf.GGUFReader, gguf.get_tensor_name_map

    with models._gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # the same parse for the config, tokenizer and weights
        assert first.tensors[0].data.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is name_map
        assert name_map.get_name("model.layers.1.self_attn.q_proj") == "blk.1.attn_q"

    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == originals
    assert gguf.GGUFReader(path) is not first


def test_non_finite_weights_are_named_before_anything_is_written(minilm_bridge, minilm_weights):
    """A NaN in W_Q names its layer and head; a NaN outside the heads (an MLP weight) names the parameter."""
    models.check_finite(minilm_bridge, minilm_weights, "minilm (trained)")  # the real model passes
    broken = minilm_weights.W_Q.clone()
    broken[3, 7, 5, 2] = float("nan")
    with pytest.raises(models.NonFiniteWeightsError, match=r"minilm \(trained\): W_Q of layer 3, head 7"):
        models.check_finite(minilm_bridge, dataclasses.replace(minilm_weights, W_Q=broken), "minilm (trained)")
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    with torch.no_grad():
        mlp[1].weight[0, 1] = float("inf")
    with pytest.raises(models.NonFiniteWeightsError, match=r"parameter 1\.weight holds NaN or infinity"):
        models.check_finite(mlp, minilm_weights, "tiny")
