import pytest
import torch

from svalign.svd import canonicalize_signs, factored_svd


@pytest.mark.parametrize(("d_a", "d_b", "h"), [(48, 48, 8), (30, 20, 6), (10, 10, 16)])
def test_factored_svd_matches_dense_svd(device, d_a, d_b, h):
    generator = torch.Generator().manual_seed(0)
    A = torch.randn(3, 4, d_a, h, generator=generator, dtype=torch.float64).to(device)
    B = torch.randn(3, 4, d_b, h, generator=generator, dtype=torch.float64).to(device)
    U, S, V = factored_svd(A, B)
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
