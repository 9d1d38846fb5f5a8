"""Gradient-conflict statistics (report 003, Figure 5): per task pair, how often the cosine of their gradients on
the shared parameters is negative, and its mean, accumulated over an epoch."""

from __future__ import annotations

import torch

from minbert.combiners.base import gramian


class ConflictStats:
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.negative: dict[str, int] = {}
        self.total: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def update(self, grads: torch.Tensor, names: list[str]) -> None:
        M = gramian(grads)  # (T, T) inner products, float64
        norm = M.diagonal().sqrt().clamp(min=1e-12)
        cos = M / norm[:, None] / norm[None, :]
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                key = f"{names[i]}-{names[j]}"
                c = float(cos[i, j])
                self.negative[key] = self.negative.get(key, 0) + (c < 0)
                self.total[key] = self.total.get(key, 0.0) + c
                self.count[key] = self.count.get(key, 0) + 1

    def summary(self) -> dict[str, float]:
        out = {}
        for key, n in self.count.items():
            out[f"conflict/{key}/negative"] = self.negative[key]
            out[f"conflict/{key}/mean_cos"] = self.total[key] / n
            out[f"conflict/{key}/pairs"] = n
        return out

    def state_dict(self) -> dict:
        return {"negative": self.negative, "total": self.total, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.negative, self.total, self.count = (dict(state.get(k, {})) for k in ("negative", "total", "count"))
