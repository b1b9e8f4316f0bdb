import numpy as np
import pytest
import torch

from svalign import io, runtime
from svalign.tables import TOY_METRICS, TOY_TRAJECTORY, TOY_WEIGHTS
from svalign.toy import sweeps, theory
from svalign.toy.config import ToyConfig, make_template, points_of_shape, sweep_config, sweep_groups, sweep_points
from svalign.toy.metrics import head_feature_metrics, match_pairs
from svalign.toy.train import ToyParams, init_params, run_columns, train_toy

SCHEMAS = {"weights": TOY_WEIGHTS, "metrics": TOY_METRICS, "trajectory": TOY_TRAJECTORY}


def test_multi_pair_template_decays_linearly():
    template = make_template("multi_pair", n_features=100, n_pairs=20, pair_offset=20)
    T = template.matrix()
    assert T[0, 20] == 1.0 and T[19, 39] == pytest.approx(1 / 20)
    assert np.count_nonzero(T) == 20
    assert template.attended_features == tuple(range(40))
    assert list(template.values) == sorted(template.values, reverse=True)


def test_template_that_does_not_fit_fails():
    with pytest.raises(ValueError, match="pair_offset"):
        make_template("multi_pair", n_features=30, n_pairs=20, pair_offset=20)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown keys"):
        ToyConfig.from_mapping({"lamda": [1.0]})
    with pytest.raises(ValueError, match="sparsities"):
        ToyConfig(sparsities=(1.0,))
    with pytest.raises(ValueError, match="lambdas"):
        ToyConfig(lambdas=(-0.5,))


def test_instance_grid_order():
    config = ToyConfig(seeds=(3, 4), sparsities=(0.8,), lambdas=(1.0, 0.0))
    assert [(r["lam"], r["seed"]) for r in config.instances()] == [(1.0, 3), (1.0, 4), (0.0, 3), (0.0, 4)]


def _orthonormal_features(n_instances: int, d_model: int, n_features: int) -> torch.Tensor:
    return torch.eye(d_model, n_features).expand(n_instances, d_model, n_features).clone()


def test_metrics_of_a_hand_built_head():
    """Ω = 3 e0 e2ᵀ + 1.5 e1 e3ᵀ on orthonormal features: two pairs, perfectly aligned, σ = (3, 1.5)."""
    template = make_template("multi_pair", n_features=4, n_pairs=2, pair_offset=2)
    W = _orthonormal_features(1, 4, 4)
    W_Q = torch.zeros(1, 4, 3)
    W_K = torch.zeros(1, 4, 3)
    W_Q[0, 0, 0], W_K[0, 2, 0] = 3.0, 1.0
    W_Q[0, 1, 1], W_K[0, 3, 1] = 1.5, 1.0
    m = head_feature_metrics(W, W_Q, W_K, template, target_scale=3.0)
    np.testing.assert_allclose(m["sigma"][0], [3.0, 1.5, 0.0], atol=1e-12)
    assert m["matched_rank"][0].tolist() == [0, 1]
    np.testing.assert_allclose(m["matched_cos_u"][0], 1.0)
    np.testing.assert_allclose(m["matched_cos_v"][0], 1.0)
    np.testing.assert_allclose(m["gain"][0], [3.0, 1.5])
    np.testing.assert_allclose(m["sigma_over_target"][0], [1.0, 1.0])  # T = (1, 1/2), β = 3
    assert m["mean_matched_cos"][0] == pytest.approx(1.0)
    assert m["sigma2_over_sigma1"][0] == pytest.approx(0.5)
    assert m["n_significant"][0] == 2
    assert m["spearman_sigma_T"][0] == pytest.approx(1.0)
    assert m["n_distinct_best"][0] == 2
    assert m["max_interference_attended"][0] == pytest.approx(0.0)


def test_hungarian_matching_does_not_let_two_pairs_share_a_direction():
    """Two pairs whose features point the same way: best match claims one singular pair twice."""
    template = make_template("multi_pair", n_features=4, n_pairs=2, pair_offset=2)
    W = torch.zeros(1, 3, 4)
    W[0, 0, 0] = W[0, 0, 1] = 1.0  # w0 = w1
    W[0, 1, 2] = W[0, 1, 3] = 1.0  # w2 = w3
    W[0, 2, :] = 1e-3  # break exact ties
    W_Q = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])
    W_K = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1e-3]]])
    m = head_feature_metrics(W, W_Q, W_K, template, target_scale=1.0)
    assert m["n_distinct_best"][0] == 1
    assert sorted(m["matched_rank"][0].tolist()) == [0, 1]
    assert m["min_matched_cos"][0] < 0.1


def test_orthonormal_features_head_alone_aligns_and_matches_template(device):
    """Features fixed orthonormal, head trained alone with MSE: u_1 = w_a, v_1 = w_b, σ_1 = β·T."""
    config = ToyConfig(
        n_features=6,
        d_model=6,
        d_head=3,
        template="single_pair",
        target_scale=4.0,
        context_len=1,
        attention_loss="mse",
        seeds=(0, 1, 2),
        sparsities=(0.5,),
        lambdas=(1.0,),
        steps=1500,
        batch_size=256,
        lr=1e-2,
        log_every=500,
        eval_batch_size=512,
        train_features=False,
    )
    start = init_params(config, config.seeds, torch.device("cpu"))
    start.W = _orthonormal_features(3, 6, 6)
    run = train_toy(config, device, initial=start, progress=False)
    torch.testing.assert_close(run.params.W.cpu(), start.W)  # frozen
    final = run.final
    np.testing.assert_array_less(0.99, final["matched_cos_u"][:, 0])
    np.testing.assert_array_less(0.99, final["matched_cos_v"][:, 0])
    np.testing.assert_allclose(final["sigma"][:, 0], 4.0, rtol=0.05)
    np.testing.assert_array_less(final["sigma2_over_sigma1"], 0.05)
    assert (final["matched_rank"][:, 0] == 0).all()
    # Theorem 1: the trained Ω is the closed-form optimum (here Ω* = βT, features orthonormal).
    np.testing.assert_array_less(final["closed_form_rel_error"], 0.05)
    np.testing.assert_array_less(0.99, final["closed_form_cos_u"][:, 0])
    np.testing.assert_array_less(0.99, final["closed_form_cos_v"][:, 0])
    np.testing.assert_allclose(final["closed_form_sigma"][:, 0], 4.0, rtol=1e-6)


def test_closed_form_solves_the_normal_equations():
    generator = torch.Generator().manual_seed(0)
    D, N = 5, 8  # fewer dimensions than features: pseudo-inverses
    X = torch.randn(D, N, generator=generator, dtype=torch.float64)
    Y = torch.randn(D, N, generator=generator, dtype=torch.float64)
    T = torch.from_numpy(make_template("multi_pair", N, n_pairs=3, pair_offset=4).matrix()).double() * 3
    M = torch.from_numpy(theory.activation_second_moment(N, 0.7))
    omega = theory.closed_form_omega(X, Y, T, M, M)
    torch.testing.assert_close((X @ M @ X.T) @ omega @ (Y @ M @ Y.T), X @ M @ T @ M @ Y.T)
    # isotropic statistics and orthonormal features: Ω* = T exactly (the paper's corollary)
    eye = torch.eye(N, dtype=torch.float64)
    torch.testing.assert_close(theory.closed_form_omega(eye, eye, T), T)
    # the second-moment matrix of sparse U[0, 1] activations, checked by sampling
    u = torch.rand(200_000, 4, generator=generator, dtype=torch.float64)
    f = torch.where(u < 0.7, 0.0, (u - 0.7) / 0.3)
    np.testing.assert_allclose((f.T @ f / len(f)).numpy(), theory.activation_second_moment(4, 0.7), atol=2e-3)


def _tiny_config(**overrides) -> ToyConfig:
    values = dict(steps=60, batch_size=64, log_every=20, eval_batch_size=128, seeds=(0, 1), lambdas=(1.0, 0.0))
    values.update(overrides)
    return ToyConfig(**values)


def test_same_seed_gives_identical_results():
    first = train_toy(_tiny_config(), progress=False)
    second = train_toy(_tiny_config(), progress=False)
    for name, tensor in first.params.tensors().items():
        assert torch.equal(tensor, second.params.tensors()[name]), name
    np.testing.assert_array_equal(first.final["sigma"], second.final["sigma"])


def test_an_instance_does_not_depend_on_its_batch_neighbours():
    batched = train_toy(_tiny_config(seeds=(0, 1), lambdas=(1.0,)), progress=False)
    alone = train_toy(_tiny_config(seeds=(1,), lambdas=(1.0,)), progress=False)
    for name, tensor in alone.params.tensors().items():
        torch.testing.assert_close(batched.params.tensors()[name][1:], tensor, rtol=1e-4, atol=1e-5)


def test_control_instance_shares_init_and_data_but_head_is_not_trained():
    run = train_toy(_tiny_config(seeds=(0,), lambdas=(1.0, 0.0)), progress=False)
    start = init_params(run.config, [0, 0], torch.device("cpu"))
    torch.testing.assert_close(start.W[0], start.W[1])
    torch.testing.assert_close(run.params.W_Q[1], start.W_Q[1])  # λ = 0: no gradient reaches the head
    assert not torch.allclose(run.params.W_Q[0], start.W_Q[0])


def test_divergence_stops_with_a_clear_error():
    config = _tiny_config(attention_loss="mse", target_scale=1e30, context_len=1)
    with pytest.raises(
        runtime.TrainingDivergedError, match=r"step 0: instance \d \(seed=\d, sparsity=0.9, lam=1.0\) has loss inf"
    ):
        train_toy(config, progress=False)


def test_tables_roundtrip_and_are_deterministic(tmp_path):
    paths = []
    for name in ("a", "b"):
        run = train_toy(_tiny_config(), progress=False)
        outputs = {k: tmp_path / name / f"{k}.parquet" for k in ("weights", "metrics", "trajectory")}
        record = io.provenance("toy", {"experiment": "tiny", **run.config.to_dict()}, seed=list(run.config.seeds))
        for name, columns in run_columns(run, "tiny").items():  # as scripts/toy_train.py writes them
            io.write_table(outputs[name], SCHEMAS[name], columns, record)
        paths.append(outputs)
    for key in ("weights", "metrics", "trajectory"):
        assert paths[0][key].read_bytes() == paths[1][key].read_bytes(), key
    metrics = io.to_frame(io.read_table(paths[0]["metrics"], TOY_METRICS))
    assert len(metrics) == 4 and metrics["cos_u"].iloc[0].shape == (20, 10)
    trajectory = io.read_table(paths[0]["trajectory"], TOY_TRAJECTORY)
    assert sorted(set(trajectory.column("step").to_pylist())) == [0, 20, 40, 60]
    weights = io.read_table(paths[0]["weights"], TOY_WEIGHTS)
    np.testing.assert_array_equal(io.tensor(weights, "W_Q"), run.params.W_Q.numpy())
    assert io.read_provenance(paths[0]["weights"])["config"]["experiment"] == "tiny"


def test_params_numpy_is_float32():
    params = ToyParams(*(torch.zeros(1, 2, 2, dtype=torch.float64) for _ in range(4)))
    assert all(a.dtype == np.float32 for a in params.numpy().values())


@pytest.mark.parametrize("norm", [0.0, 12.5, 60.0])
def test_anisotropic_features_have_the_requested_interference(norm):
    X = theory.anisotropic_features(n_features=100, d_model=101, interference_norm=norm, seed=4).double()
    torch.testing.assert_close(X.norm(dim=0), torch.ones(100, dtype=torch.float64), atol=1e-6, rtol=0)
    E = X.T @ X - torch.eye(100, dtype=torch.float64)
    assert torch.linalg.matrix_norm(E, ord=2).item() == pytest.approx(norm, abs=1e-4)
    with pytest.raises(ValueError, match="out of reach"):
        theory.anisotropic_features(n_features=10, d_model=11, interference_norm=9.0, seed=0)


def test_anisotropy_sweep_degrades_alignment_like_the_closed_form():
    config = ToyConfig(
        n_features=41,
        d_model=42,
        d_head=8,
        template="multi_pair",
        n_pairs=4,
        pair_offset=20,
        target_scale=10.0,
        context_len=1,
        attention_loss="mse",
        steps=400,
        batch_size=256,
        lr=1e-2,
        log_every=400,
        eval_batch_size=512,
    )
    data = sweeps.run_anisotropy(config, [0.0, 30.0], [0], "cpu")
    np.testing.assert_allclose(data["measured_norm"], [0.0, 30.0], atol=1e-4)
    trained, closed = data["mean_matched_cos"], data["closed_form_mean_matched_cos"]
    assert closed[0] == pytest.approx(1.0, abs=1e-6) and trained[0] > 0.97
    assert closed[1] < closed[0] - 0.05  # interference bends the optimum's singular vectors away from the features
    np.testing.assert_allclose(trained, closed, atol=0.05)  # and training finds that optimum


def test_frozen_rank_one_head_orthogonalises_the_attended_features():
    """Theorem 3: with Ω frozen at β u vᵀ, training the autoencoder alone rotates w_0 → u, w_1 → v and pushes the
    other features out of their span; the λ = 0 control (same init and data) keeps its superposition."""
    config = ToyConfig(
        d_head=1,
        train_head=False,
        head_init="rank_one",
        seeds=(1,),
        lambdas=(1.0, 0.0),
        steps=1000,
        batch_size=512,
        log_every=1000,
        eval_batch_size=1024,
    )
    run = train_toy(config, progress=False)
    start = init_params(config, [1, 1], torch.device("cpu"))
    torch.testing.assert_close(run.params.W_Q, start.W_Q)  # the head never moved
    assert run.final["sigma"][0, 0] == pytest.approx(config.target_scale, rel=1e-5)
    head, control = run.final["attended_span_energy"]
    assert head < 0.01 and control > 0.05
    assert run.final["matched_cos_u"][0, 0] > 0.95 and run.final["matched_cos_v"][0, 0] > 0.95
    assert run.final["matched_cos_u"][1, 0] < 0.6


def test_sweep_points_vary_one_parameter_at_a_time():
    base = {
        "lambdas": [1.0],
        "sparsities": [0.9],
        "n_features": 20,
        "context_len": 8,
        "d_head": 10,
        "template": "multi_pair",
        "n_pairs": 4,
        "pair_offset": 4,
    }
    points = sweep_points(base, {"lam": [0.5, 1.0], "d_head": [2]})
    assert points == [
        {"lam": 1.0, "sparsity": 0.9, "n_features": 20, "context_len": 8, "d_head": 10},
        {"lam": 0.5, "sparsity": 0.9, "n_features": 20, "context_len": 8, "d_head": 10},
        {"lam": 1.0, "sparsity": 0.9, "n_features": 20, "context_len": 8, "d_head": 2},
    ]
    config = sweep_config(base, [points[2]], seeds=[0, 1])
    assert config.d_head == 2 and config.lambdas == (1.0,) and config.seeds == (0, 1)
    with pytest.raises(ValueError, match="cannot sweep"):
        sweep_points(base, {"lr": [0.1]})
    # Points that share (N, m, H) form one group; the group's config zips their (λ, S) with the seeds.
    assert sweep_groups(points) == [
        {"n_features": 20, "context_len": 8, "d_head": 10},
        {"n_features": 20, "context_len": 8, "d_head": 2},
    ]
    group = points_of_shape(points, sweep_groups(points)[0])
    assert group == points[:2]
    config = sweep_config(base, group, seeds=[0, 1])
    assert [(r["lam"], r["sparsity"], r["seed"]) for r in config.instances()] == [
        (1.0, 0.9, 0),
        (1.0, 0.9, 1),
        (0.5, 0.9, 0),
        (0.5, 0.9, 1),
    ]
    with pytest.raises(ValueError, match="share"):
        sweep_config(base, points, seeds=[0])


def test_zip_grid_pairs_lambdas_with_sparsities():
    config = ToyConfig(lambdas=(1.0, 4.0), sparsities=(0.9, 0.8), seeds=(3,), instance_grid="zip")
    assert [(r["lam"], r["sparsity"]) for r in config.instances()] == [(1.0, 0.9), (4.0, 0.8)]
    assert len(ToyConfig(lambdas=(1.0, 4.0), sparsities=(0.9, 0.8), seeds=(3,)).instances()) == 4
    with pytest.raises(ValueError, match="zip pairs lambdas with sparsities"):
        ToyConfig(lambdas=(1.0, 4.0), sparsities=(0.9,), instance_grid="zip")
    with pytest.raises(ValueError, match="instance_grid"):
        ToyConfig(instance_grid="grid")


def test_batched_sweep_group_reproduces_one_run_per_point():
    """Training same-shape points as one batch gives each point the rows it gets alone (per-instance RNG)."""
    base = {
        "lambdas": [1.0],
        "sparsities": [0.9],
        "n_features": 12,
        "d_model": 6,
        "d_head": 4,
        "context_len": 4,
        "template": "multi_pair",
        "n_pairs": 2,
        "pair_offset": 4,
        "steps": 60,
        "batch_size": 64,
        "log_every": 60,
        "eval_batch_size": 128,
    }
    points = sweep_points(base, {"lam": [4.0], "sparsity": [0.8]})
    grouped = sweeps.sweep_rows(train_toy(sweep_config(base, points, seeds=[0, 1]), progress=False))
    alone = [sweeps.sweep_rows(train_toy(sweep_config(base, [p], seeds=[0, 1]), progress=False)) for p in points]
    for name, column in grouped.items():
        expected = np.concatenate([rows[name] for rows in alone])
        np.testing.assert_allclose(column, expected, rtol=1e-4, atol=1e-5, err_msg=name)
    assert grouped["lam"].tolist() == [1.0, 1.0, 4.0, 4.0, 1.0, 1.0]
    assert grouped["sparsity"].tolist() == [0.9, 0.9, 0.9, 0.9, 0.8, 0.8]


def test_head_smaller_than_the_number_of_pairs_makes_pairs_share():
    """App. E: with H = 2 < P = 4 pairs only two pairs get a singular pair; best matching reuses directions."""
    base = {
        "lambdas": [1.0],
        "sparsities": [0.9],
        "n_features": 20,
        "context_len": 8,
        "d_head": 2,
        "d_model": 10,
        "template": "multi_pair",
        "n_pairs": 4,
        "pair_offset": 4,
        "steps": 300,
        "batch_size": 256,
        "log_every": 300,
        "eval_batch_size": 512,
    }
    point = sweep_points(base, {})[0]
    run = train_toy(sweep_config(base, [point], seeds=[0]), progress=False)
    rows = sweeps.sweep_rows(run)
    assert rows["n_matched"].tolist() == [2]
    assert rows["n_distinct_best"][0] <= 2
    assert np.isnan(run.final["matched_cos_u"][0]).sum() == 2


def test_match_pairs_leaves_surplus_pairs_unmatched():
    score = np.array([[[0.9, 0.1], [0.8, 0.7], [0.2, 0.3]]])  # 3 pairs, 2 singular pairs
    assert match_pairs(score).tolist() == [[0, 1, -1]]
