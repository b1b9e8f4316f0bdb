"""The two thin-QR methods of the factored SVD: Cholesky-QR2 against Householder, rank-deficient and zero factors,
the checked batched core SVD, and accuracy on every MiniLM and SmolLM2 head against float64."""

from __future__ import annotations

import pytest
import torch

from svalign.linalg import (
    METHODS,
    cholesky_qr2,
    core_svd,
    core_svd_driver,
    factored_svd,
    repair_svd,
    thin_qr,
)
from svalign.svd import head_factors, model_rotations, model_svd, qk_svd, reconstruction_error, rotary_matrices


def _with_condition(X: torch.Tensor, condition: float) -> torch.Tensor:
    """Tall matrices like X (same left singular vectors), with singular values spread log-evenly over 1..condition
    and random right singular vectors (column scaling alone would not do: Cholesky is blind to it)."""
    U, _, _ = torch.linalg.svd(X, full_matrices=False)
    h = X.shape[-1]
    V, _ = torch.linalg.qr(torch.randn(*X.shape[:-2], h, h, generator=torch.Generator().manual_seed(9)))
    return U @ torch.diag(torch.logspace(0, torch.log10(torch.tensor(condition)).item(), h)) @ V.mT


def _assert_thin_qr(X, Q, R, tolerance):
    """Q has orthonormal columns, R is upper triangular and Q R = X (relative to ‖X‖)."""
    eye = torch.eye(Q.shape[-1], dtype=torch.float64, device=Q.device)
    assert (Q.double().mT @ Q.double() - eye).abs().max() < tolerance
    assert torch.equal(R, R.triu())
    scale = X.double().norm(dim=(-1, -2)).clamp_min(1e-30)
    assert ((Q.double() @ R.double() - X.double()).norm(dim=(-1, -2)) / scale).max() < tolerance


def test_cholesky_qr2_is_a_thin_qr_to_working_precision(device):
    generator = torch.Generator().manual_seed(0)
    X = _with_condition(torch.randn(4, 3, 200, 16, generator=generator), 1e4).to(device)
    Q, R, ok = cholesky_qr2(X)  # cond(X) = 1e4: one float32 pass loses orthogonality (~1e-4), two do not
    assert ok.all() and Q.dtype == torch.float32 and R.dtype == torch.float64
    assert (R.diagonal(dim1=-2, dim2=-1) > 0).all()
    _assert_thin_qr(X, Q, R, 2e-6)


def test_rank_deficient_zero_and_ill_conditioned_factors_go_to_householder(device):
    """GQA-like duplicated columns, a zero factor and cond 1e9 fail Cholesky-QR2's checks; thin_qr still returns a
    valid thin QR for every matrix of the batch, and the well-conditioned ones keep their Cholesky result."""
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(5, 100, 8, generator=generator)
    X[1] = torch.cat([X[1, :, :4], X[1, :, :4]], -1)  # the same 4 directions twice: rank 4
    X[2] = 0.0  # a zero factor
    X[3] = _with_condition(X[3], 1e9)
    X = X.to(device)
    _, _, ok = cholesky_qr2(X)
    assert ok.tolist() == [True, False, False, False, True]
    Q, R = thin_qr(X, "cholesky_qr2")
    _assert_thin_qr(X, Q, R, 2e-6)
    Q_chol, R_chol, _ = cholesky_qr2(X)
    assert torch.equal(Q[[0, 4]], Q_chol[[0, 4]]) and torch.equal(R[[0, 4]], R_chol[[0, 4]])


def test_wide_factors_and_unknown_methods():
    X = torch.randn(3, 6, 10)  # d < h: the Gram is singular, so Householder does the whole batch
    Q, R = thin_qr(X, "cholesky_qr2")
    assert Q.shape == (3, 6, 6) and R.shape == (3, 6, 10)
    _assert_thin_qr(X, Q, R, 1e-5)
    with pytest.raises(ValueError, match="unknown SVD method"):
        thin_qr(X, "householder")
    with pytest.raises(ValueError, match=r"svd\.method"):
        from svalign.models import HeadWeights

        model_svd(HeadWeights(X, X, None, None, torch.arange(6), None, 1.0, True, "llama", "", ""), method="svd")


@pytest.mark.parametrize("method", METHODS)
def test_factored_svd_of_rank_deficient_products_matches_dense(device, method):
    """Ω = A Bᵀ with a rank-3 B (duplicated key columns) and a zero head: σ and the nonzero triplets agree."""
    generator = torch.Generator().manual_seed(2)
    A = torch.randn(2, 3, 40, 6, generator=generator, dtype=torch.float64)
    B = torch.randn(2, 3, 40, 6, generator=generator, dtype=torch.float64)
    B[0, 1] = torch.cat([B[0, 1, :, :3], B[0, 1, :, :3]], -1)
    A[1, 2] = 0.0
    A, B = A.to(device), B.to(device)
    U, S, V = factored_svd(A, B, method)
    omega = A @ B.mT
    torch.testing.assert_close(U @ torch.diag_embed(S) @ V.mT, omega, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, torch.linalg.svdvals(omega)[..., :6], rtol=1e-10, atol=1e-10)
    eye = torch.eye(6, dtype=A.dtype, device=device)
    torch.testing.assert_close(U.mT @ U, eye.expand_as(U.mT @ U), rtol=0, atol=1e-10)


def test_qr_method_is_the_unchanged_reference_route():
    """method='qr' computes exactly what the pipeline computed before Cholesky-QR2 existed (bit for bit)."""
    generator = torch.Generator().manual_seed(3)
    A = torch.randn(2, 3, 33, 8, generator=generator)
    B = torch.randn(2, 3, 33, 8, generator=generator)
    R = rotary_matrices(torch.arange(4, dtype=torch.float64), 8, 8, 10000.0).float()
    Q_A, R_A = torch.linalg.qr(A, mode="reduced")
    Q_B, R_B = torch.linalg.qr(B, mode="reduced")
    core_u, S, core_vh = torch.linalg.svd((R_A.unsqueeze(-3) @ R) @ R_B.unsqueeze(-3).mT, full_matrices=False)
    result = qk_svd(A, B, R)  # the default method
    assert torch.equal(result.basis_q, Q_A) and torch.equal(result.basis_k, Q_B) and torch.equal(result.S, S)
    sums = Q_A.sum(-2, keepdim=True).unsqueeze(-3) @ core_u
    sign = torch.where(sums < 0, -1.0, 1.0)
    assert torch.equal(result.core_u, core_u * sign) and torch.equal(result.core_v, core_vh.mT * sign)


def test_core_svd_driver_avoids_torchs_per_matrix_loop_on_cuda():
    assert core_svd_driver(torch.device("cpu"), 64) is None
    assert core_svd_driver(torch.device("cuda"), 32) is None  # gesvdjBatched
    assert core_svd_driver(torch.device("cuda"), 64) == "gesvda"


def test_cuda_core_route_on_cpu_with_a_gram_based_stand_in_for_gesvda(monkeypatch):
    """The gesvda branch of core_svd, run on the CPU: a stand-in computes the SVD from CᵀC as gesvda does, so the
    zero and rank-deficient cores come back with non-orthonormal or NaN vectors, which the check redoes."""
    svd = torch.linalg.svd
    redone = []

    def gram_svd(C, full_matrices=True, driver=None):
        if driver is None:
            redone.append(C.shape[0])
            return svd(C, full_matrices=full_matrices)
        eigenvalues, V = torch.linalg.eigh(C.mT @ C)
        S, V = eigenvalues.flip(-1).clamp_min(0).sqrt(), V.flip(-1)
        return C @ V / S.unsqueeze(-2), S, V.mT

    monkeypatch.setattr("svalign.linalg.core_svd_driver", lambda device, size: "gesvda")
    monkeypatch.setattr(torch.linalg, "svd", gram_svd)
    generator = torch.Generator().manual_seed(5)
    left, right = (torch.linalg.qr(torch.randn(5, 40, 40, generator=generator))[0] for _ in range(2))
    C = left @ torch.diag(torch.logspace(0, 1, 40)) @ right.mT  # cond 10: the Gram route is accurate
    C[1] = 0.0
    C[2, :, 20:] = C[2, :, :20]  # rank 20
    U, S, V = core_svd(C, torch.float32)
    assert redone == [2]  # the zero and the rank-deficient core, in one call
    C64 = C.double()
    torch.testing.assert_close(U.double() @ torch.diag_embed(S.double()) @ V.double().mT, C64, rtol=0, atol=1e-5)
    eye = torch.eye(40, dtype=torch.float64)
    assert (U.double().mT @ U.double() - eye).abs().max() < 1e-6
    assert (V.double().mT @ V.double() - eye).abs().max() < 1e-6
    torch.testing.assert_close(S.double(), torch.linalg.svdvals(C64), rtol=0, atol=1e-5)


def test_repair_svd_redoes_only_the_cores_that_fail_their_check():
    generator = torch.Generator().manual_seed(4)
    C = torch.randn(6, 12, 12, generator=generator, dtype=torch.float64)
    C[5] = 0.0
    U, S, Vh = torch.linalg.svd(C, full_matrices=False)
    V = Vh.mT
    U_bad, S_bad = U.clone(), S.clone()
    U_bad[1, :, 3] *= 1.001  # lost orthogonality (as gesvda's vectors of tiny σ can)
    S_bad[2, 0] = float("nan")
    U_new, S_new, V_new = repair_svd(C, U_bad, S_bad, V)
    torch.testing.assert_close(U_new @ torch.diag_embed(S_new) @ V_new.mT, C, rtol=0, atol=1e-12)
    assert torch.equal(U_new[[0, 3, 4, 5]], U[[0, 3, 4, 5]])
    eye = torch.eye(12, dtype=C.dtype)
    assert (U_new[1].mT @ U_new[1] - eye).abs().max() < 1e-12
    U_c, S_c, V_c = core_svd(C.float(), torch.float32)  # CPU: LAPACK in the working dtype
    assert U_c.dtype == V_c.dtype == torch.float32 and S_c.shape == (6, 12)
    torch.testing.assert_close(S_c.double(), S, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Accuracy on every head of the real models, against float64
# --------------------------------------------------------------------------------------------------


def _accuracy(weights, offsets, method):
    """(max over heads and offsets of |σ − σ_ref|/σ_1, max reconstruction error) of the float32 SVD, with σ_ref from
    the same factored route in float64 (Householder; singular values only)."""
    A, B = head_factors(weights)
    offsets = torch.tensor(offsets)
    rotations = model_rotations(weights, offsets, torch.device("cpu"), torch.float32)
    fast = qk_svd(A, B, rotations, method)
    R_A, R_B = (torch.linalg.qr(X.double(), mode="r")[1] for X in (A, B))
    R = model_rotations(weights, offsets, torch.device("cpu"), torch.float64)
    R = torch.eye(A.shape[-1], dtype=torch.float64).unsqueeze(0) if R is None else R
    S_ref = torch.linalg.svdvals(R_A.unsqueeze(-3) @ R @ R_B.unsqueeze(-3).mT)  # [L, H, n_offsets, r]
    sigma_error = ((fast.S.double() - S_ref).abs() / S_ref[..., :1]).max().item()
    return sigma_error, reconstruction_error(A, B, rotations, fast).max().item()


@pytest.mark.slow
def test_cholesky_qr2_accuracy_on_every_minilm_head(minilm_weights):
    sigma_error, recon = _accuracy(minilm_weights, [0], "cholesky_qr2")
    assert sigma_error <= 1e-6 and recon <= 1e-5, (sigma_error, recon)


@pytest.mark.slow
def test_cholesky_qr2_accuracy_on_every_smollm2_head(smollm2):
    """Every head at 5 of the 32 offsets (benchmarks/svd.py measures all of them: 3.2e-7 and 3.8e-7)."""
    sigma_error, recon = _accuracy(smollm2, [0, 1, 2, 15, 31], "cholesky_qr2")
    assert sigma_error <= 1e-6 and recon <= 1e-5, (sigma_error, recon)


@pytest.mark.slow
def test_gqa_expanded_layer_factors_are_rank_deficient_and_still_exact(smollm2):
    """A layer's GQA-expanded key factor [576, 9 x 64] repeats each key head 3 times (rank 192 of 576): its
    Cholesky fails, Householder takes it, and the SVD of W_Q W_Kᵀ over the layer still matches float64."""
    A = smollm2.W_Q[:4].permute(0, 2, 1, 3).reshape(4, 576, 576)  # layers 0..3, heads side by side
    B = smollm2.W_K[:4].permute(0, 2, 1, 3).reshape(4, 576, 576)
    assert torch.linalg.matrix_rank(B[0].double()).item() == 192
    _, _, ok = cholesky_qr2(B)
    assert not ok.any()
    U, S, V = factored_svd(A, B, "cholesky_qr2")
    S_ref = torch.linalg.svdvals(A.double() @ B.double().mT)
    assert ((S.double() - S_ref).abs() / S_ref[..., :1]).max() <= 1e-6
    omega = A.double() @ B.double().mT
    rebuilt = U.double() @ torch.diag_embed(S.double()) @ V.double().mT
    assert ((rebuilt - omega).norm(dim=(-1, -2)) / omega.norm(dim=(-1, -2))).max() <= 1e-5
    # the same within each head: a head whose key factor repeats its first 32 columns
    W_K = smollm2.W_K[0, :3].clone()
    W_K[..., 32:] = W_K[..., :32]
    U, S, V = factored_svd(smollm2.W_Q[0, :3], W_K, "cholesky_qr2")
    omega = smollm2.W_Q[0, :3].double() @ W_K.double().mT
    S_ref = torch.linalg.svdvals(omega)[..., :64]
    assert ((S.double() - S_ref).abs() / S_ref[..., :1]).max() <= 1e-6


def test_head_factors_through_both_methods_agree_on_minilm(minilm_weights):
    A, B = head_factors(minilm_weights)
    by_qr = qk_svd(A, B, method="qr")
    by_cholesky = qk_svd(A, B, method="cholesky_qr2")
    torch.testing.assert_close(by_cholesky.S, by_qr.S, rtol=0, atol=2e-6 * by_qr.S.max().item())
    cos = (by_cholesky.U()[..., 0, :, 0] * by_qr.U()[..., 0, :, 0]).sum(-1)  # the leading u of every head
    S = by_qr.S[..., 0, :]
    separated = (S[..., 0] - S[..., 1]) / S[..., 0] > 1e-3
    assert separated.sum() > 60 and cos[separated].min() > 0.9999  # canonical signs: same sign too


def test_config_schema_offers_the_methods_and_default_of_the_library(repo):
    import yaml

    from svalign.linalg import DEFAULT_METHOD

    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    method = schema["properties"]["svd"]["properties"]["method"]
    assert tuple(method["enum"]) == METHODS and method["default"] == DEFAULT_METHOD
    assert yaml.safe_load((repo / "config.yaml").read_text())["svd"]["method"] == DEFAULT_METHOD
