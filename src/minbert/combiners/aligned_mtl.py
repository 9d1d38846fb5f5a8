"""Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for Multi-Task Learning", Algorithm 1):
make the task gradients' matrix well-conditioned before summing, by replacing G with the orthogonal matrix of its
principal components, all scaled to the smallest singular value.

With the Gramian M = G G^T = V diag(lambda) V^T (the eigenvalues above rounding, largest first, rank r), the
balanced gradients are B G with B = sqrt(lambda_min) V diag(lambda)^(-1/2) V^T, and the update their sum,
G^T B 1 (TorchJD's `AlignedMTL` with a preference of ones: minbert's combiners are on the sum's scale). `scale`:
which eigenvalue sets the scale - "min" (the paper), "median", or "rmse" (the mean, as its original code).
"""

from __future__ import annotations

from typing import Literal

import torch

from minbert.combiners.base import Combiner, combine, gramian


def balance(M: torch.Tensor, scale: str = "min") -> torch.Tensor:
    lam, V = torch.linalg.eigh(M)
    tol = lam.max() * len(M) * torch.finfo(M.dtype).eps
    r = int((lam > tol).sum())
    if r == 0:
        return torch.eye(len(M), dtype=M.dtype)
    order = torch.argsort(lam, descending=True)
    lam, V = lam[order][:r], V[:, order][:, :r]
    s = {"min": lam[-1], "median": torch.median(lam), "rmse": lam.mean()}[scale]
    return s.sqrt() * V @ torch.diag(1 / lam.sqrt()) @ V.T


class AlignedMTL(Combiner):
    def __init__(self, scale: Literal["min", "median", "rmse"] = "min"):
        self.scale = scale

    def __call__(self, grads, rng, names=None):
        B = balance(gramian(grads), self.scale)
        return combine(grads, B @ torch.ones(len(B), dtype=B.dtype))
