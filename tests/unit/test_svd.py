import pytest
import torch
from transformer_lens import FactoredMatrix

from svalign import io
from svalign.svd import (
    METHODS,
    canonicalize_signs,
    check_reconstruction,
    factored_svd,
    qk_svd,
    read_model_svd,
    reconstruction_error,
    rotary_matrices,
    svd_tables,
)
from svalign.tables import HEAD_SVD, HEAD_SVD_BASES


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("d_a", "d_b", "h"), [(48, 48, 8), (30, 20, 6), (10, 10, 16)])
def test_factored_svd_matches_dense_svd(device, d_a, d_b, h, method):
    generator = torch.Generator().manual_seed(0)
    A = torch.randn(3, 4, d_a, h, generator=generator, dtype=torch.float64).to(device)
    B = torch.randn(3, 4, d_b, h, generator=generator, dtype=torch.float64).to(device)
    U, S, V = factored_svd(A, B, method)
    rank = min(d_a, d_b, h)
    assert U.shape == (3, 4, d_a, rank) and S.shape == (3, 4, rank) and V.shape == (3, 4, d_b, rank)
    omega = A @ B.mT
    torch.testing.assert_close(U @ torch.diag_embed(S) @ V.mT, omega, rtol=1e-10, atol=1e-10)
    U_dense, S_dense, Vh_dense = torch.linalg.svd(omega)
    torch.testing.assert_close(S, S_dense[..., :rank], rtol=1e-10, atol=1e-10)
    U_dense, V_dense = canonicalize_signs(U_dense[..., :rank], Vh_dense.mT[..., :rank])
    torch.testing.assert_close(U, U_dense, rtol=0, atol=1e-8)
    torch.testing.assert_close(V, V_dense, rtol=0, atol=1e-8)
    eye = torch.eye(rank, dtype=A.dtype, device=device)
    torch.testing.assert_close(U.mT @ U, eye.expand_as(U.mT @ U), rtol=0, atol=1e-10)


def test_factored_svd_agrees_with_qk_svd_without_rotations():
    """Both go through the same thin-QR / core-SVD route; qk_svd keeps U factored and adds an offset axis."""
    generator = torch.Generator().manual_seed(4)
    A = torch.randn(2, 3, 20, 5, generator=generator, dtype=torch.float64)
    B = torch.randn(2, 3, 20, 5, generator=generator, dtype=torch.float64)
    U, S, V = factored_svd(A, B)
    result = qk_svd(A, B)
    assert result.S.shape == (2, 3, 1, 5)
    torch.testing.assert_close(result.S[..., 0, :], S, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.U()[..., 0, :, :], U, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.V()[..., 0, :, :], V, rtol=0, atol=1e-12)


def test_canonical_signs_make_column_sums_positive():
    U = torch.tensor([[0.1, 0.9], [-0.8, 0.2]])
    V = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    U_c, V_c = canonicalize_signs(U, V)
    torch.testing.assert_close(U_c, torch.tensor([[-0.1, 0.9], [0.8, 0.2]]))
    torch.testing.assert_close(V_c, torch.tensor([[-1.0, 2.0], [-3.0, 4.0]]))
    torch.testing.assert_close(U_c @ V_c.mT, U @ V.mT)  # each u σ vᵀ is unchanged


def test_mismatched_inner_dimensions_fail():
    with pytest.raises(ValueError, match="inner dimensions"):
        factored_svd(torch.zeros(5, 3), torch.zeros(5, 4))


# --------------------------------------------------------------------------------------------------
# Rotary matrices, per-head QK SVD with offsets, checks against dense SVD and FactoredMatrix
# --------------------------------------------------------------------------------------------------


def test_rotary_matrices_compose_by_offset_and_leave_non_rotary_dims():
    positions = torch.arange(-3, 9, dtype=torch.float64)
    R = rotary_matrices(positions, d_head=16, rotary_dim=8, base=10000.0)
    eye = torch.eye(16, dtype=torch.float64)
    torch.testing.assert_close(R @ R.mT, eye.expand_as(R))  # orthogonal
    for t, j in [(5, 2), (8, 8), (0, 7)]:
        R_t, R_j = R[t + 3], R[j + 3]
        expected = rotary_matrices(torch.tensor([float(t - j)], dtype=torch.float64), 16, 8, 10000.0)[0]
        torch.testing.assert_close(R_t @ R_j.mT, expected)  # q_t·k_j depends on t − j only
    torch.testing.assert_close(R[:, 8:, 8:], eye[8:, 8:].expand(len(R), 8, 8))  # partial rotary
    assert torch.count_nonzero(R[:, :8, 8:]) == 0


def test_rotary_matches_rotate_half_convention():
    """q R_p equals q cos + rotate_half(q) sin with HF's inv_freq, as Llama/NeoX apply it."""
    q = torch.randn(3, 8, dtype=torch.float64)
    p = 5.0
    R = rotary_matrices(torch.tensor([p], dtype=torch.float64), 8, 8, 100000.0)[0]
    inv_freq = 1.0 / 100000.0 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    angles = torch.cat([inv_freq, inv_freq]) * p
    rotate_half = torch.cat([-q[:, 4:], q[:, :4]], -1)
    torch.testing.assert_close(q @ R, q * angles.cos() + rotate_half * angles.sin())


def _sigma_and_cos(S, U, dense):
    """max |σ − σ_ref|/σ_1 and min |cos| of vectors whose relative gap to both neighbours exceeds 1e-3."""
    U_ref, S_ref, _ = torch.linalg.svd(dense)
    r = S.shape[-1]
    S_ref, U_ref = S_ref[..., :r], U_ref[..., :r]
    sigma_error = ((S.double() - S_ref).abs() / S_ref[..., :1]).max().item()
    gaps = (S_ref[..., :-1] - S_ref[..., 1:]) / S_ref[..., :1]
    inf = torch.full_like(gaps[..., :1], float("inf"))
    separated = torch.minimum(torch.cat([inf, gaps], -1), torch.cat([gaps, inf], -1)) > 1e-3
    cos = (U.double().mT @ U_ref).diagonal(dim1=-2, dim2=-1).abs()
    return sigma_error, cos[separated].min().item()


def test_gpt2_shaped_random_model_agrees_with_dense_svd_and_factored_matrix():
    generator = torch.Generator().manual_seed(1)
    A = torch.randn(12, 12, 768, 64, generator=generator) / 768**0.5
    B = torch.randn(12, 12, 768, 64, generator=generator) / 768**0.5
    result = qk_svd(A, B)
    U = result.U()[..., 0, :, :]
    heads = (slice(0, 12, 5), slice(0, 12, 4))  # 3 x 3 heads against a float64 dense SVD
    dense = A[heads].double() @ B[heads].double().mT
    sigma_error, min_cos = _sigma_and_cos(result.S[heads][..., 0, :], U[heads], dense)
    assert sigma_error < 1e-5 and min_cos > 0.9999
    U_fm, S_fm, _ = FactoredMatrix(A, B.mT).svd()  # every head; FactoredMatrix returns V, not Vᵀ
    torch.testing.assert_close(result.S[..., 0, :], S_fm, rtol=1e-5, atol=1e-5 * S_fm[..., :1].max().item())
    assert (U.mT @ U_fm).diagonal(dim1=-2, dim2=-1).abs().min() > 0.999
    assert reconstruction_error(A, B, None, result).max() < 1e-5


def test_offsets_and_biases_agree_with_dense_svd():
    generator = torch.Generator().manual_seed(2)
    A = torch.randn(2, 3, 41, 8, generator=generator, dtype=torch.float64)  # bias-augmented: d_model 40 + 1
    B = torch.randn(2, 3, 41, 8, generator=generator, dtype=torch.float64)
    R = rotary_matrices(torch.arange(5, dtype=torch.float64), 8, 8, 10000.0)
    result = qk_svd(A, B, R)
    dense = A.unsqueeze(-3) @ R @ B.unsqueeze(-3).mT  # [2, 3, 5, 41, 41]
    sigma_error, min_cos = _sigma_and_cos(result.S, result.U(), dense)
    assert sigma_error < 1e-12 and min_cos > 0.999999
    # The factored error measure agrees with the dense one (at float32 errors; it resolves down to ~1e-8).
    single = qk_svd(A.float(), B.float(), R.float())
    error = reconstruction_error(A.float(), B.float(), R.float(), single)
    rebuilt = single.U().double() @ torch.diag_embed(single.S.double()) @ single.V().double().mT
    dense_error = (rebuilt - dense).norm(dim=(-1, -2)) / dense.norm(dim=(-1, -2))
    assert dense_error.max() < 1e-5
    torch.testing.assert_close(error, dense_error, rtol=0.1, atol=2e-8)
    # signs are canonical: every u_k sums to a positive number, so the dense SVD canonicalised agrees
    assert (result.U().sum(-2) > 0).all()


def test_model_svd_offsets_follow_rope_and_say_whether_pairs_use_them():
    """svd.model_offsets decides the offsets once: 0..max_offset under RoPE, [0] without; ModelSVD carries them."""
    from svalign.models import HeadWeights, RotarySpec
    from svalign.svd import model_svd

    generator = torch.Generator().manual_seed(3)
    W_Q, W_K = (torch.randn(2, 3, 16, 8, generator=generator) for _ in range(2))
    common = {
        "b_Q": None,
        "b_K": None,
        "kv_head": torch.arange(3),
        "attn_scale": 8**0.5,
        "causal": True,
        "architecture": "llama",
        "processing": "",
        "head_input_hook": "",
    }
    rope = model_svd(HeadWeights(W_Q, W_K, rotary=RotarySpec(8, 10000.0), **common), max_offset=4)
    assert rope.uses_offsets and rope.max_offset == 4 and rope.offsets.tolist() == [0, 1, 2, 3, 4]
    assert rope.svd.S.shape == (2, 3, 5, 8) and not rope.augmented
    plain = model_svd(HeadWeights(W_Q, W_K, rotary=None, **common), max_offset=4)
    assert not plain.uses_offsets and plain.max_offset == 0 and plain.offsets.tolist() == [0]
    torch.testing.assert_close(rope.svd.S[:, :, 0], plain.svd.S[:, :, 0])  # R_0 = I


def test_minilm_model_svd_float32_matches_float64_reference(minilm_weights):
    from svalign.svd import head_factors, model_svd

    fast = model_svd(minilm_weights, precision="float32")
    reference = model_svd(minilm_weights, precision="float64")
    assert fast.augmented and fast.svd.basis_q.shape == (6, 12, 385, 32)
    assert fast.recon_error.max() < 1e-5 and reference.recon_error.max() < 1e-7
    torch.testing.assert_close(fast.svd.S.double(), reference.svd.S, rtol=1e-5, atol=1e-6)
    A, B = head_factors(minilm_weights)
    dense = A[:, ::4].double() @ B[:, ::4].double().mT
    sigma_error, min_cos = _sigma_and_cos(fast.svd.S[:, ::4, 0], fast.svd.U()[:, ::4, 0], dense)
    assert sigma_error < 1e-5 and min_cos > 0.9999
    _, S_fm, _ = FactoredMatrix(A, B.mT).svd()
    torch.testing.assert_close(fast.svd.S[:, :, 0], S_fm, rtol=1e-5, atol=1e-5 * S_fm[..., :1].max().item())


def test_svd_tables_roundtrip_and_reconstruction_check(minilm_weights, tmp_path):
    from svalign.svd import model_svd

    result = model_svd(minilm_weights)
    svd_data, bases_data = svd_tables(result, "minilm", "trained")
    record = io.provenance("test")
    svd_path = io.write_table(tmp_path / "svd.parquet", HEAD_SVD, svd_data, record)
    bases_path = io.write_table(tmp_path / "bases.parquet", HEAD_SVD_BASES, bases_data, record)
    back = read_model_svd(io.read_table(svd_path, HEAD_SVD), io.read_table(bases_path, HEAD_SVD_BASES))
    for name in ("basis_q", "basis_k", "S", "core_u", "core_v"):
        torch.testing.assert_close(getattr(back.svd, name), getattr(result.svd, name).float())
    assert not back.uses_offsets and back.offsets.tolist() == [0] and back.augmented
    check_reconstruction(back, 1e-5)
    with pytest.raises(ArithmeticError, match="max_recon_error"):
        check_reconstruction(back, 1e-12)
