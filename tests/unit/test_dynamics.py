"""Training dynamics: checkpoint schedule, the repeated-segment task, head scores against hand-built patterns and a
per-position reference, exact resume after an interruption, NaN handling, and checkpoints that the extract → SVD → SAD
stages load as local-path models."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from svalign import io, models, runtime, svd, tables
from svalign.dynamics import scores, task, train
from svalign.dynamics.config import (
    N_RESERVED,
    DynamicsConfig,
    checkpoint_name,
    checkpoint_step,
    checkpoint_steps,
    dynamics_models,
    series_in_one_job,
)
from svalign.dynamics.scores import induction_score, previous_token_score
from svalign.sad import forward
from svalign.sad import run as sad_run
from svalign.sad.config import SADConfig

TINY = {
    "vocab_size": 16,
    "seq_len": 12,
    "min_period": 3,
    "max_period": 6,
    "n_layers": 2,
    "n_heads": 2,
    "d_model": 16,
    "d_mlp": 32,
    "steps": 12,
    "batch_size": 4,
    "n_checkpoints": 6,
    "eval_batch_size": 8,
}


@pytest.fixture(scope="module")
def tiny() -> DynamicsConfig:
    return DynamicsConfig(**TINY)


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    """One uninterrupted tiny training run (shared by the tests that only read it)."""
    return train.train_transformer(tiny, tmp_path_factory.mktemp("dynamics") / "run", progress=False)


# --------------------------------------------------------------------------------------------------
# Schedule and config
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "n"), [(1, 2), (12, 6), (100, 30), (3000, 40), (5000, 64), (10, 11)])
def test_checkpoint_steps_are_sorted_unique_and_span_the_run(total, n):
    steps = checkpoint_steps(total, n)
    assert steps[0] == 0 and steps[-1] == total
    assert steps == sorted(set(steps)) and len(steps) >= n
    assert all(isinstance(s, int) for s in steps)
    assert 1 in steps  # the first update is always saved
    if total >= 10:  # denser early than late: half of the checkpoints fall in the first half of the run or before
        assert steps[len(steps) // 2] <= total / 2


def test_checkpoint_steps_reproduce_pythias_schedule():
    """143000 steps, 154 checkpoints: Pythia's 0, 1, 2, 4, …, 512, then every 1000 steps."""
    pythia = [0, *(2**k for k in range(10)), *range(1000, 143001, 1000)]
    assert checkpoint_steps(143000, 154) == pythia


def test_checkpoint_steps_default_schedule_is_log_then_even():
    steps = checkpoint_steps(3000, 40)
    assert steps[:8] == [0, 1, 2, 4, 8, 16, 32, 64]
    gaps = np.diff(steps[8:])
    assert gaps.max() - gaps.min() <= 1  # evenly spaced (up to rounding) after the doubling part


@pytest.mark.parametrize(("total", "n"), [(0, 2), (10, 1), (10, 12)])
def test_checkpoint_steps_reject_impossible_requests(total, n):
    with pytest.raises(ValueError, match=r"total_steps|n_checkpoints"):
        checkpoint_steps(total, n)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_period": 2}, "min_period"),
        ({"max_period": 7}, "max_period"),  # 2 × 7 > seq_len 12
        ({"max_period": 2}, "max_period"),
        ({"d_model": 15}, "d_model"),
        ({"lr": 0.0}, "lr"),
        ({"aba_prob": 1.0}, "aba_prob"),
        ({"n_checkpoints": 14}, "n_checkpoints"),
        ({"steps": 0}, "steps"),
    ],
)
def test_config_names_the_bad_field(change, field):
    with pytest.raises(ValueError, match=field):
        DynamicsConfig(**{**TINY, **change})


def test_config_from_mapping_rejects_unknown_keys():
    assert DynamicsConfig.from_mapping(TINY) == DynamicsConfig(**TINY)
    with pytest.raises(ValueError, match="unknown keys \\['n_layer'\\]"):
        DynamicsConfig.from_mapping({**TINY, "n_layer": 2})


def test_checkpoint_names_invert_and_keep_the_model_names():
    assert checkpoint_name(4) == "step000004" and checkpoint_name(1234567) == "step1234567"
    for step in (0, 4, 999999, 1234567):
        assert checkpoint_step(checkpoint_name(step)) == step
    for other in (".step000004.tmp", "step4", "step0000004", "step000004x", "checkpoints.json"):
        assert checkpoint_step(other) is None
    models_ = dynamics_models({"train": TINY}, "ckpt")
    assert list(models_) == [f"dyn_step{s:06d}" for s in (0, 1, 2, 4, 8, 12)]  # output paths depend on these
    assert models_["dyn_step000004"] == {
        "source": "ckpt/step000004",
        "revision": None,
        "step": 4,
        "config_key": "dynamics.train",
        "ours": True,
    }
    external = dynamics_models({"checkpoints": ["EleutherAI/pythia-160m@step1000", "/local/dir"]}, "ckpt")
    assert [(m["step"], m["revision"]) for m in external.values()] == [(1000, "step1000"), (1, None)]


def test_checkpoint_jobs_auto_runs_our_series_in_one_job_and_external_checkpoints_each_in_its_own():
    external = ["EleutherAI/pythia-160m@step1000"]
    assert series_in_one_job({}) and series_in_one_job({"checkpoint_jobs": "auto", "checkpoints": []})
    assert not series_in_one_job({"checkpoint_jobs": "auto", "checkpoints": external})
    assert series_in_one_job({"checkpoint_jobs": "series", "checkpoints": external})
    assert not series_in_one_job({"checkpoint_jobs": "each"})


# --------------------------------------------------------------------------------------------------
# Task and tokenizer
# --------------------------------------------------------------------------------------------------


def test_batches_are_a_pure_function_of_seed_purpose_and_step():
    config = DynamicsConfig(**TINY)
    a, b = task.repeat_batch(config, 8, 0, "train", 5), task.repeat_batch(config, 8, 0, "train", 5)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.start, b.start) and torch.equal(a.period, b.period)
    for other in (task.repeat_batch(config, 8, 0, "train", 6), task.repeat_batch(config, 8, 0, "eval", 5)):
        assert not torch.equal(a.tokens, other.tokens)


def test_every_sequence_holds_a_segment_and_its_immediate_copy():
    config = DynamicsConfig(**{**TINY, "seq_len": 40, "max_period": 15})
    batch = task.repeat_batch(config, 256, 3, "train", 1)
    T = config.seq_len
    assert batch.tokens.shape == (256, T) and int(batch.tokens.min()) >= N_RESERVED
    assert int(batch.tokens.max()) < config.model_vocab_size
    assert int(batch.period.min()) >= config.min_period and int(batch.period.max()) <= config.max_period
    assert int(batch.start.min()) >= 0 and bool((batch.start + 2 * batch.period <= T).all())
    copy = batch.in_copy()
    assert torch.equal(copy.sum(1), batch.period)
    rows, positions = copy.nonzero(as_tuple=True)
    assert torch.equal(batch.tokens[rows, positions], batch.tokens[rows, positions - batch.period[rows]])
    # In-context positions: the query and the token it predicts both lie in the copy, L − 1 per sequence.
    assert torch.equal(batch.icl_mask().sum(1), batch.period - 1)


def test_filler_repeats_the_token_two_back_at_the_configured_rate():
    config = DynamicsConfig(**{**TINY, "vocab_size": 64, "seq_len": 64, "max_period": 3, "aba_prob": 0.3})
    batch = task.repeat_batch(config, 512, 0, "train", 0)
    same = batch.tokens[:, 2:] == batch.tokens[:, :-2]
    copy = batch.in_copy()
    filler = ~copy[:, 2:] & ~copy[:, :-2]  # both tokens are filler (the copy overwrites after the echo is drawn)
    # P(x_t = x_{t−2}) = p + (1 − p) / V; ~28000 pairs, standard error ~0.003.
    assert abs(same[filler].float().mean().item() - (0.3 + 0.7 / 64)) < 0.015
    no_echo = task.repeat_batch(DynamicsConfig(**{**TINY, "aba_prob": 0.0, "vocab_size": 64}), 512, 0, "x")
    assert (no_echo.tokens[:, 2:] == no_echo.tokens[:, :-2]).float().mean().item() < 0.05


def test_tokenizer_is_one_token_per_word():
    config = DynamicsConfig(**TINY)
    tokenizer = task.build_tokenizer(config)
    assert tokenizer("t0 t12 t15", add_special_tokens=False)["input_ids"] == [3, 15, 18]
    assert tokenizer("t99", add_special_tokens=False)["input_ids"] == [0]  # unknown word → <unk>
    texts = task.sad_prompts(config, 5, seed=1)
    batch = task.repeat_batch(config, 5, 1, "sad")
    assert [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] == batch.tokens.tolist()


def test_prompts_columns_are_the_sad_prompts_with_their_segments():
    config = DynamicsConfig(**TINY)
    columns = task.prompts_columns(config, 6, seed=3)
    batch = task.repeat_batch(config, 6, 3, "sad")
    assert columns["text"] == task.sad_prompts(config, 6, seed=3)
    assert columns["prompt"].tolist() == list(range(6))
    assert columns["start"].tolist() == batch.start.tolist() and columns["period"].tolist() == batch.period.tolist()
    table = tables.DYNAMICS_PROMPTS.build(columns)
    assert table.column_names == ["prompt", "text", "start", "period"] and table.num_rows == 6


# --------------------------------------------------------------------------------------------------
# Head scores
# --------------------------------------------------------------------------------------------------


def _patterns(start: torch.Tensor, period: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-built [batch, 1, T, T] patterns: a perfect induction head (copy queries attend to t − L + 1, others
    to themselves) and a perfect previous-token head (t attends to t − 1, position 0 to itself)."""
    b = len(start)
    t = torch.arange(T)
    copy = (t >= (start + period)[:, None]) & (t < (start + 2 * period)[:, None])
    induction_key = torch.where(copy, t - period[:, None] + 1, t)
    induction = torch.nn.functional.one_hot(induction_key, T).float().unsqueeze(1)
    previous = torch.nn.functional.one_hot((t - 1).clamp(min=0), T).float().expand(b, 1, T, T)
    return induction, previous


def test_scores_of_hand_built_patterns():
    start, period, T = torch.tensor([0, 2, 5, 1]), torch.tensor([4, 3, 6, 5]), 20
    induction, previous = _patterns(start, period, T)
    assert induction_score(induction, period, start).tolist() == [1.0]
    assert previous_token_score(induction).item() == 0.0  # L >= 3: t − L + 1 is never t − 1
    assert previous_token_score(previous).tolist() == [1.0]
    assert induction_score(previous, period, start).item() == 0.0
    both = torch.cat([induction, previous, 0.5 * (induction + previous)], 1)  # heads are scored independently
    torch.testing.assert_close(induction_score(both, period, start), torch.tensor([1.0, 0.0, 0.5]))
    # Scalar start/period broadcast over the batch.
    single_induction, _ = _patterns(torch.tensor([2, 2]), torch.tensor([5, 5]), T)
    assert induction_score(single_induction, 5, 2).item() == 1.0


def test_induction_score_equals_a_per_query_reference():
    generator = torch.Generator().manual_seed(0)
    b, h, T = 6, 3, 24
    logits = torch.randn(b, h, T, T, generator=generator).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -1e9)
    pattern = logits.softmax(-1)
    period = torch.randint(3, 12, (b,), generator=generator)
    start = torch.tensor([int(torch.randint(0, T - 2 * int(p) + 1, (1,), generator=generator)) for p in period])
    expected_induction, expected_previous = torch.zeros(h), torch.zeros(h)
    n_queries = 0
    for row in range(b):
        L, s = int(period[row]), int(start[row])
        for t in range(s + L, s + 2 * L):
            expected_induction += pattern[row, :, t, t - L + 1]
            n_queries += 1
        for t in range(1, T):
            expected_previous += pattern[row, :, t, t - 1] / (b * (T - 1))
    torch.testing.assert_close(induction_score(pattern, period, start), expected_induction / n_queries)
    torch.testing.assert_close(previous_token_score(pattern), expected_previous)


# --------------------------------------------------------------------------------------------------
# Training: checkpoints, exact resume, divergence
# --------------------------------------------------------------------------------------------------


def test_every_scheduled_checkpoint_is_a_self_contained_hf_directory(tiny, tiny_run):
    assert list(tiny_run.checkpoints) == tiny.schedule() == [0, 1, 2, 4, 8, 12]
    for step, path in tiny_run.checkpoints.items():
        assert path.name == checkpoint_name(step)
        names = {p.name for p in path.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
        assert train.checkpoint_info(path)["step"] == step
    assert not [p for p in tiny_run.checkpoints[0].parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    first, last = (load_file(str(tiny_run.checkpoints[s] / "model.safetensors")) for s in (0, 12))
    assert not torch.equal(first["gpt_neox.layers.0.attention.query_key_value.weight"],
                           last["gpt_neox.layers.0.attention.query_key_value.weight"])  # fmt: skip
    assert tiny_run.log["step"].tolist() == list(range(1, 13)) and np.isfinite(tiny_run.log["loss"]).all()


def test_init_is_seeded():
    config = DynamicsConfig(**TINY)
    a, b = train.build_model(config), train.build_model(config)
    c = train.build_model(DynamicsConfig(**{**TINY, "seed": 1}))
    weight = "gpt_neox.layers.1.attention.query_key_value.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("interruption", ["stop_after", "deleted_checkpoints"])
def test_resumed_training_is_bit_identical_to_an_uninterrupted_run(tiny, tiny_run, tmp_path, interruption):
    out = tmp_path / "run"
    if interruption == "stop_after":
        partial = train.train_transformer(tiny, out, stop_after=6, progress=False)
        assert list(partial.checkpoints) == [0, 1, 2, 4]
    else:  # a killed run: later checkpoints missing, a half-written one left behind as a temp dir
        shutil.copytree(tiny_run.checkpoints[0].parent, out)
        for step in (8, 12):
            shutil.rmtree(out / checkpoint_name(step))
        (out / ".step000008.tmp").mkdir()
        (out / ".step000008.tmp" / "junk").write_text("partial write")
    assert train.can_resume(out, tiny)
    resumed = train.train_transformer(tiny, out, progress=False)
    assert resumed.resumed_from == 4
    for step in (8, 12):
        expected, got = _weights(tiny_run.checkpoints[step]), _weights(resumed.checkpoints[step])
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), f"step {step} differs after resuming"
    for key in ("step", "loss", "icl_loss", "lr"):
        np.testing.assert_array_equal(resumed.log[key], tiny_run.log[key])
    state = torch.load(resumed.checkpoints[12] / train.STATE_FILE, weights_only=True)
    reference = torch.load(tiny_run.checkpoints[12] / train.STATE_FILE, weights_only=True)
    assert all(
        torch.equal(state["optimizer"]["state"][i]["exp_avg_sq"], reference["optimizer"]["state"][i]["exp_avg_sq"])
        for i in reference["optimizer"]["state"]
    )


def test_resume_refuses_checkpoints_of_another_config(tiny, tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run.checkpoints[0].parent, out)
    shutil.rmtree(out / "step000012")
    other = DynamicsConfig(**{**TINY, "lr": 2e-3})
    assert not train.can_resume(out, other)
    with pytest.raises(ValueError, match=r"differs in \['lr'\]"):
        train.train_transformer(other, out, progress=False)
    fresh = train.train_transformer(other, out, resume=False, progress=False)
    assert fresh.resumed_from is None and list(fresh.checkpoints) == other.schedule()


def test_nan_loss_raises_naming_step_and_seed(tiny, tmp_path, monkeypatch):
    real = train.sequence_losses
    calls = []

    def poisoned(model, batch):
        loss, icl = real(model, batch)
        calls.append(1)
        return (loss * math.nan, icl) if len(calls) == 5 else (loss, icl)

    monkeypatch.setattr(train, "sequence_losses", poisoned)
    config = DynamicsConfig(**{**TINY, "seed": 7})
    with pytest.raises(runtime.TrainingDivergedError, match=r"at step 5 \(seed 7\)"):
        train.train_transformer(config, tmp_path / "run", progress=False)
    assert sorted(train.checkpoint_dirs(tmp_path / "run")) == [0, 1, 2, 4]  # what came before is kept


# --------------------------------------------------------------------------------------------------
# Tables and the downstream stages
# --------------------------------------------------------------------------------------------------


def test_training_log_and_head_scores_tables(tiny, tiny_run, tmp_path):
    record = io.provenance("test")
    columns = train.training_log_columns(tiny_run, "tiny")
    path = io.write_table(tmp_path / "log.parquet", tables.DYNAMICS_TRAINING_LOG, columns, record)
    frame = io.to_frame(io.read_table(path, tables.DYNAMICS_TRAINING_LOG))
    assert frame["step"].tolist() == list(range(1, 13)) and (frame["model"] == "tiny").all()
    assert (frame["seed"] == tiny.seed).all() and frame["loss"].tolist() == tiny_run.log["loss"].tolist()

    head_scores = scores.checkpoint_scores(tiny_run.checkpoints, tiny)
    n_heads = tiny.n_layers * tiny.n_heads
    assert head_scores["step"].tolist() == [s for s in tiny.schedule() for _ in range(n_heads)]
    assert head_scores["layer"][:n_heads].tolist() == [0, 0, 1, 1]
    assert head_scores["head"][:n_heads].tolist() == [0, 1, 0, 1]
    for name in ("induction_score", "previous_token_score"):
        assert ((head_scores[name] >= 0) & (head_scores[name] <= 1)).all()
    # At init attention is near uniform: the scores are the mean of 1/(t + 1) over their queries, far from 1.
    assert head_scores["induction_score"][:n_heads].max() < 0.3
    assert head_scores["previous_token_score"][:n_heads].max() < 0.4
    assert abs(head_scores["loss"][0] - math.log(tiny.model_vocab_size)) < 0.3  # a random model predicts ~uniformly
    columns = scores.head_scores_columns(head_scores, "tiny", tiny.seed)
    path = io.write_table(tmp_path / "scores.parquet", tables.DYNAMICS_HEAD_SCORES, columns, record)
    assert io.read_table(path, tables.DYNAMICS_HEAD_SCORES).num_rows == len(tiny.schedule()) * n_heads


def test_manifest_lists_every_scheduled_checkpoint(tiny, tiny_run, tmp_path):
    out_dir = tiny_run.checkpoints[0].parent
    path = scores.write_manifest(tmp_path / "checkpoints.json", out_dir, tiny)
    assert scores.read_manifest(path) == tiny_run.checkpoints
    assert all(train.checkpoint_info(d)["step"] == s for s, d in scores.read_manifest(path).items())
    with pytest.raises(RuntimeError, match=r"steps \[0, 1, 2, 4, 8, 12\] are missing"):
        scores.write_manifest(tmp_path / "empty.json", tmp_path / "nowhere", tiny)


def test_checkpoint_runs_through_extract_svd_and_sad(tiny, tiny_run):
    """A checkpoint directory is a local-path model source: weights, SVD reconstruction and SAD's score check."""
    source = {"name": "dyn", "source": str(tiny_run.checkpoints[12])}
    weights, _ = models.load_head_weights(source, "trained", 0)
    assert weights.architecture == "gpt_neox" and weights.causal and weights.b_Q is not None
    assert weights.W_Q.shape == (tiny.n_layers, tiny.n_heads, tiny.d_model, tiny.d_head)
    assert weights.rotary is not None and weights.rotary.dim == int(tiny.d_head * tiny.rotary_pct)
    result = svd.model_svd(weights, max_offset=tiny.seq_len - 1)
    svd.check_reconstruction(result, 1e-4)
    assert float(result.recon_error.max()) < 1e-5
    bridge, _ = models.load_model(source, "trained", 0)
    batches, kept = forward.tokenize_prompts(bridge.tokenizer, task.sad_prompts(tiny, 4), True, bridge.cfg.n_ctx)
    assert kept == [0, 1, 2, 3] and [b.tokens.shape[1] for b in batches] == [tiny.seq_len]
    pairs, diagnostics = sad_run.run_sad(bridge, weights, result, batches, SADConfig(null_draws=1))
    assert diagnostics["max_score_error"] < 1e-4 and len(pairs["layer"]) > 0


@pytest.mark.slow
def test_induction_head_forms_with_a_phase_change(tmp_path):
    """The default task and model, shortened: an induction head appears in layer 1 and the in-context loss drops.

    With the default config (seed 0) the in-context loss falls from ~3.2 to ~2.0 nats between steps 200 and 350
    while one layer-1 head's induction score rises from ~0.1 to ~0.6 (and layer-0 heads become previous-token heads).
    """
    config = DynamicsConfig(steps=500, n_checkpoints=8, eval_batch_size=32)
    run = train.train_transformer(config, tmp_path / "run", progress=False)
    head_scores = scores.checkpoint_scores(run.checkpoints, config)
    first, last = head_scores["step"] == 0, head_scores["step"] == 500
    layer1 = head_scores["layer"] == 1
    assert head_scores["induction_score"][first].max() < 0.1
    assert head_scores["induction_score"][last & layer1].max() > 0.5
    assert head_scores["previous_token_score"][last & ~layer1].max() > 0.8
    assert head_scores["icl_loss"][first][0] - head_scores["icl_loss"][last][0] > 1.5
