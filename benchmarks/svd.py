"""Batched factored SVD of QK matrices vs TransformerLens FactoredMatrix.svd() vs a naive dense SVD per head.

    python benchmarks/svd.py [--threads 2] [--device auto] [--naive-heads 16] [--repeats 3]

Two workloads, each timed side by side in one run on the same weights:

* a random GPT-2-small-shaped model: 12 layers x 12 heads, d_model 768, d_head 64 (Ω = W_Q W_Kᵀ);
* SmolLM2-135M (results/weights/smollm2/trained.parquet, from `snakemake results/weights/smollm2/trained.parquet`)
  with RoPE offsets δ = 0..31: Ω_δ = W_Q R_δ W_Kᵀ for 30 x 9 heads x 32 offsets.

Naive = torch.linalg.svd of the dense [d, d] matrix, one head at a time (timed on --naive-heads heads and scaled
to all). FactoredMatrix = transformer_lens.FactoredMatrix(A, Bᵀ).svd() batched over every head (and offset).
Ours = svalign.svd.qk_svd (shared thin QR per head, one small SVD per offset, canonical signs). Accuracy: max
|σ − σ_ref| / σ_1 and min |cos| between singular vectors with a relative gap > 1e-3, against a float64 dense SVD.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformer_lens import FactoredMatrix

from svalign import io, models, tables
from svalign.runtime import configure_torch, resolve_device
from svalign.svd import head_factors, qk_svd, rotary_matrices


def best_time(function: Callable[[], object], repeats: int, device: torch.device) -> float:
    function()  # warm-up (and CUDA context)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def accuracy(S: torch.Tensor, U: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """(max |σ − σ_ref|/σ_1, min |cos(u, u_ref)| over vectors with relative gap > 1e-3) on sampled heads."""
    S_ref, U_ref = reference
    r = S.shape[-1]
    sigma_error = ((S.double() - S_ref[..., :r]).abs() / S_ref[..., :1]).max().item()
    cos = (U.double().mT @ U_ref[..., :r]).diagonal(dim1=-2, dim2=-1).abs()
    gaps = (
        torch.minimum(
            torch.cat([S_ref[..., :1] * 0 + float("inf"), S_ref[..., : r - 1] - S_ref[..., 1:r]], -1),
            torch.cat([S_ref[..., : r - 1] - S_ref[..., 1:r], S_ref[..., r - 1 : r]], -1),
        )
        / S_ref[..., :1]
    )
    return sigma_error, cos[gaps > 1e-3].min().item()


def compare(name: str, A: torch.Tensor, B: torch.Tensor, rotations: torch.Tensor | None, args, device) -> None:
    """A, B: [heads, d, h]; rotations: [n_offsets, h, h] or None."""
    n_offsets = 1 if rotations is None else rotations.shape[0]
    A_rot = A.unsqueeze(1) if rotations is None else A.unsqueeze(1) @ rotations  # [heads, offsets, d, h]
    B_rot = B.unsqueeze(1).expand_as(A_rot)
    n = A.shape[0] * n_offsets
    sample = torch.linspace(0, A.shape[0] - 1, 4).long()
    dense64 = A_rot[sample].double() @ B_rot[sample].double().mT
    U_ref, S_ref, _ = torch.linalg.svd(dense64)
    reference = (S_ref, U_ref)

    ours = lambda: qk_svd(A, B, rotations)  # noqa: E731
    factored = lambda: FactoredMatrix(A_rot, B_rot.mT).svd()  # noqa: E731
    naive_a, naive_b = A_rot.reshape(n, *A.shape[1:]), B_rot.reshape(n, *B.shape[1:])
    picks = torch.linspace(0, n - 1, min(args.naive_heads, n)).long()
    naive = lambda: [torch.linalg.svd(naive_a[i] @ naive_b[i].mT) for i in picks]  # noqa: E731

    t_ours = best_time(ours, args.repeats, device)
    t_fm = best_time(factored, args.repeats, device)
    t_naive = best_time(naive, 1, device) * n / len(picks)
    result = ours()
    err_ours = accuracy(result.S[sample], result.U()[sample], reference)
    U_fm, S_fm, _ = factored()
    err_fm = accuracy(S_fm[sample], U_fm[sample], reference)

    print(f"\n{name}: {A.shape[0]} heads x {n_offsets} offsets, d {A.shape[1]}, r {A.shape[2]} ({device})")
    print(f"  naive dense SVD per head : {t_naive:9.3f} s  (timed on {len(picks)} heads, scaled)")
    print(f"  FactoredMatrix.svd()     : {t_fm:9.3f} s  max|dσ|/σ1 {err_fm[0]:.1e}  min|cos| {err_fm[1]:.7f}")
    print(f"  svalign qk_svd           : {t_ours:9.3f} s  max|dσ|/σ1 {err_ours[0]:.1e}  min|cos| {err_ours[1]:.7f}")
    print(f"  speed-up vs FactoredMatrix: {t_fm / t_ours:6.1f}x (target >= 5x)")
    print(f"  speed-up vs naive         : {t_naive / t_ours:6.1f}x (target >= 50x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--naive-heads", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smollm2", default="results/weights/smollm2/trained.parquet")
    parser.add_argument("--offsets", type=int, default=32)
    args = parser.parse_args()
    configure_torch(args.threads)
    device = resolve_device(args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )

    generator = torch.Generator().manual_seed(0)
    shape = (144, 768, 64)
    A = (torch.randn(shape, generator=generator) / 768**0.5).to(device)
    B = (torch.randn(shape, generator=generator) / 768**0.5).to(device)
    compare("random GPT-2-small-shaped", A, B, None, args, device)

    path = Path(args.smollm2)
    if not path.is_file():
        print(f"\nSmolLM2 skipped: {path} missing (snakemake --cores 2 {path})")
        return
    weights = models.read_head_weights(io.read_table(path, tables.HEAD_WEIGHTS))
    A, B = (t.reshape(-1, *t.shape[2:]).to(device) for t in head_factors(weights))
    rotary = weights.rotary
    offsets = torch.arange(args.offsets, dtype=torch.float64)
    rotations = rotary_matrices(offsets, weights.d_head, rotary.dim, rotary.base).float().to(device)
    compare(f"SmolLM2 with RoPE offsets 0..{args.offsets - 1}", A, B, rotations, args, device)


if __name__ == "__main__":
    main()
