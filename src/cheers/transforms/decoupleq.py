"""decoupleQ (arXiv 2404.12759): a layer's integers and its floats as two sets of unknowns.

For one linear layer with weight W (out, in) and the calibration inputs' second moment
H = Σ x xᵀ (in, in), the quantized weight Ŵ = s·Q + z (a scale and a zero per row and group,
:mod:`cheers.transforms.lowbit`) is chosen to make the layer's *output* error small::

    minimise  tr((W − Ŵ) H (W − Ŵ)ᵀ)   subject to   Q integer in [0, 2^b − 1]

by alternating two exact-or-greedy steps, starting from round-to-nearest:

- the floats fixed, the integers by a GPTQ-style column-by-column solve on that fixed grid
  (each column rounded, its error pushed onto the columns not rounded yet through H⁻¹);
- the integers fixed, the scales and zeros in closed form: per output row, a least-squares
  problem in 2·(in / g) unknowns (the objective is quadratic in them).

The best of every round (never worse than the start) is kept. The block-wise stage that
follows (the floats of a whole block refined on its output) needs the model and lives in
:mod:`cheers.quantization`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange

from cheers.transforms.lowbit import LowBitSpec, dequantize, rtn

#: GPTQ's damping of H's diagonal (a share of its mean) for the integer step.
DAMP = 0.01
COLUMN_BLOCK = 128


def output_error(weight: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """``tr((W − Ŵ) H (W − Ŵ)ᵀ)``: the summed squared output error over the calibration
    inputs whose second moment is ``hessian``."""
    err = (weight.float() - approx.float()).double()
    return float(((err @ hessian.double()) * err).sum())


def solve_integers(
    weight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    hessian: torch.Tensor,
    spec: LowBitSpec,
) -> torch.Tensor:
    """The integer part for fixed floats: GPTQ's column-wise rounding with error feedback
    through the upper Cholesky factor of H⁻¹ (on a grid that is given, not searched)."""
    w = weight.detach().float().clone()
    h = hessian.detach().float().clone()
    n = w.shape[1]
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(DAMP * h.diagonal().mean())
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    g = spec.group(n)
    s_cols = scales.float().repeat_interleave(g, dim=1)  # (out, in): each column's grid
    z_cols = zeros.float().repeat_interleave(g, dim=1)
    s_cols = torch.where(s_cols.abs() < 1e-12, torch.full_like(s_cols, 1e-12), s_cols)
    q = torch.zeros_like(w, dtype=torch.uint8)
    top = spec.levels - 1
    for b0 in range(0, n, COLUMN_BLOCK):
        b1 = min(b0 + COLUMN_BLOCK, n)
        block = w[:, b0:b1].clone()
        errors = torch.zeros_like(block)
        hblock = hinv[b0:b1, b0:b1]
        for j in range(b1 - b0):
            col, d = block[:, j], hblock[j, j]
            s, z = s_cols[:, b0 + j], z_cols[:, b0 + j]
            qj = torch.round((col - z) / s).clamp(0, top)
            q[:, b0 + j] = qj.to(torch.uint8)
            err = (col - (qj * s + z)) / d
            block[:, j:] -= err[:, None] * hblock[j, j:][None, :]
            errors[:, j] = err
        w[:, b1:] -= errors @ hinv[b0:b1, b1:]
    return q


def solve_floats(
    weight: torch.Tensor, q: torch.Tensor, hessian: torch.Tensor, spec: LowBitSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scales and zeros that minimise the output error for fixed integers ``q``: per row r
    the normal equations ``(Aᵣᵀ H Aᵣ) θ = Aᵣᵀ H wᵣ`` of θ = (s₁…s_G, z₁…z_G), where column k of
    Aᵣ holds ``q[r]`` on group k (scales) or ones on group k (zeros)."""
    out, n = weight.shape
    g = spec.group(n)
    groups = n // g
    h = hessian.detach().double()
    qf = q.double()
    qg = rearrange(qf, "o (a i) -> o a i", i=g)
    # S_ss[r, a, b] = Σ_{i∈a, j∈b} q_ri H_ij q_rj, one group b at a time (memory: out × in).
    s_ss = torch.empty(out, groups, groups, dtype=torch.float64)
    for b in range(groups):
        z_b = qf[:, b * g : (b + 1) * g] @ h[b * g : (b + 1) * g, :]  # (out, in)
        s_ss[:, :, b] = rearrange(qf * z_b, "o (a i) -> o a i", i=g).sum(-1)
    h_cols = rearrange(h, "i (b j) -> i b j", j=g).sum(-1)  # (in, G): Σ_{j∈b} H_ij
    s_sz = torch.einsum("rai,aib->rab", qg, rearrange(h_cols, "(a i) b -> a i b", i=g))
    s_zz = rearrange(h_cols, "(a i) b -> a i b", i=g).sum(1)  # (G, G)
    wh = weight.detach().double() @ h  # (out, in)
    b_s = rearrange(qf * wh, "o (a i) -> o a i", i=g).sum(-1)
    b_z = rearrange(wh, "o (a i) -> o a i", i=g).sum(-1)
    top = torch.cat([s_ss, s_sz], dim=2)
    bottom = torch.cat([s_sz.transpose(1, 2), s_zz.expand(out, groups, groups)], dim=2)
    system = torch.cat([top, bottom], dim=1)  # (out, 2G, 2G)
    ridge = 1e-9 * system.diagonal(dim1=1, dim2=2).mean(-1).clamp(min=1e-30)
    system = system + ridge[:, None, None] * torch.eye(2 * groups, dtype=torch.float64)
    theta = torch.linalg.solve(system, torch.cat([b_s, b_z], dim=1))
    return theta[:, :groups].float(), theta[:, groups:].float()


@dataclass
class LayerResult:
    """One layer's quantized parts and its output error, at RTN and after each round."""

    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    rtn_error: float
    errors: list[float] = field(default_factory=list)

    @property
    def error(self) -> float:
        return min([self.rtn_error, *self.errors])


def decoupleq_layer(
    weight: torch.Tensor, hessian: torch.Tensor, spec: LowBitSpec, rounds: int = 4
) -> LayerResult:
    """decoupleQ for one layer: RTN, then ``rounds`` of (integers | floats) alternation; the
    best parts seen are returned (so the error is never above RTN's)."""
    q, scales, zeros = rtn(weight, spec)
    start = output_error(weight, dequantize(q, scales, zeros), hessian)
    best = LayerResult(q, scales, zeros, start)
    best_error = best.rtn_error
    for _ in range(rounds):
        q = solve_integers(weight, scales, zeros, hessian, spec)
        scales, zeros = solve_floats(weight, q, hessian, spec)
        error = output_error(weight, dequantize(q, scales, zeros), hessian)
        best.errors.append(error)
        if error < best_error:
            best_error, best.q, best.scales, best.zeros = error, q, scales, zeros
    return best


__all__ = [
    "LayerResult",
    "decoupleq_layer",
    "output_error",
    "solve_floats",
    "solve_integers",
]
