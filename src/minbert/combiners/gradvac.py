"""Gradient Vaccine (Wang et al. 2020, "Gradient Vaccine: Investigating and Improving Multi-task Optimization in
Massively Multilingual Models", Algorithm 1 and eq. 3; report 003).

Each task pair (i, j) keeps an EMA target cosine phi_hat_ij (decay beta, starting at 0). For task i and each other
task j in random order, with phi = cos(g_i^PC, g_j): when phi < phi_hat_ij,

    g_i^PC <- g_i^PC + g_j * |g_i^PC| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (|g_j| sqrt(1 - phi_hat^2))

which makes cos(g_i^PC, g_j) exactly phi_hat; then phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi. The update is
sum_i g_i^PC. Report 003 prints this rule with typos (its line 14 misplaces a parenthesis and uses phi^(t) for
the target, and its EMA line reads (1 - beta) phi^(t) + beta phi^(t)); this file follows the paper's equation.

`update` says when the target moves: "always", after every test (the paper's Algorithm 1, TorchJD's GradVac), or
"on_fix", only after a fix (LibMTL's GradVac, and the PCGrad-repository fork report 003 built on): the target then
follows only the cosines below it, drifts down towards their low tail, and fixes grow rare.

Every g_i^PC stays a combination of the original rows, so each group is worked on its (T, T) Gramian, as PCGrad
is (combiners/pcgrad.py): g_i^PC = A_i . G, |g_i^PC|^2 = A_i M A_i, g_i^PC . g_j = A_i M_j, and a fix adds its
coefficient to A_ij; one pass over G forms the Gramians and one the update.

`per` splits the shared parameters into groups, each with its own targets and test: "all" (one group), "layer"
(the embeddings, each encoder layer, the pooler: report 003's "applied per layer", the paper's per-component
variant) or "parameter" (each weight matrix and bias). `groups` gives the column spans directly instead.

What it did is counted per epoch (`epoch_record`), as report 003 reports it: for each ordered task pair (a, b),
the group gradients of a adjusted towards b (`gradvac/a-b/fixes`) out of those compared (`.../checks`), and the
task-gradient rows altered at all (`gradvac/altered`) out of all rows (`gradvac/rows`): the report's "altered 2000
out of a possible 54,000 gradient update steps in the first epoch". A fix raises a cosine to its EMA target, which
is not the same event as a negative cosine (conflict statistics, multitask/conflicts.py): a positive cosine below
a positive target is fixed, and a negative cosine above a negative target is not.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import torch

from minbert.combiners.base import Combiner, combine, gramian
from minbert.config import within

_LAYER = re.compile(r"^(.*?layer\.\d+)\.")


def layer_of(name: str) -> str:
    """The group of a parameter under per="layer": its encoder layer ("encoder.layer.3"), else its top module."""
    m = _LAYER.match(name)
    return m.group(1) if m else name.split(".")[0]


class GradVac(Combiner):
    def __init__(
        self,
        beta: Annotated[float, within(0, 1)] = 0.01,
        per: Literal["all", "layer", "parameter"] = "all",
        groups: list[tuple[int, int]] | None = None,
        update: Literal["always", "on_fix"] = "always",
    ):
        self.beta = beta
        self.update = update
        self.per = per
        self.groups = groups
        self.target: dict[str, float] = {}  # "a,b,group" -> phi_hat
        self.applied = 0  # adjustments made in all (every epoch)
        self.reset_counts()

    def bind(self, parameters: list[tuple[str, int]]) -> None:
        if self.per == "all" or self.groups is not None:
            return
        spans: list[tuple[int, int]] = []
        start, key = 0, None
        for name, size in parameters:
            k = layer_of(name) if self.per == "layer" else name
            if k != key:
                spans.append((start, start))
                key = k
            spans[-1] = (spans[-1][0], start + size)
            start += size
        self.groups = spans

    def reset_counts(self) -> None:
        self.fixes: dict[str, int] = {}
        self.checks: dict[str, int] = {}
        self.rows = 0
        self.altered = 0

    def __call__(self, grads: torch.Tensor, rng, names: list[str] | None = None) -> torch.Tensor:
        spans = self.groups or [(0, grads.shape[1])]
        names = names or [str(i) for i in range(grads.shape[0])]
        T = grads.shape[0]
        # per group: the Gramian of the rows' slices, and each g_i^PC as coefficients on the original slices (A = I)
        grams = [gramian(grads[:, a:b]) for a, b in spans]
        coefs = [torch.eye(T, dtype=torch.float64) for _ in spans]
        for i in range(T):
            others = [j for j in range(T) if j != i]
            rng.shuffle(others)
            fixed = 0
            for j in others:
                pair = f"{names[i]}-{names[j]}"
                for k, (M, A) in enumerate(zip(grams, coefs)):
                    done = self._vaccinate(A[i], M, j, f"{names[i]},{names[j]},{k}")
                    self.checks[pair] = self.checks.get(pair, 0) + 1
                    self.fixes[pair] = self.fixes.get(pair, 0) + done
                    fixed += done
            self.rows += 1
            self.altered += fixed > 0
        out = torch.empty(grads.shape[1], dtype=grads.dtype, device=grads.device)
        for (a, b), A in zip(spans, coefs):
            out[a:b] = combine(grads[:, a:b], A.sum(0))  # sum_i g_i^PC on this group's columns
        return out

    def _vaccinate(self, ai: torch.Tensor, M: torch.Tensor, j: int, key: str) -> bool:
        """One test of g_i^PC = ai . G (the group's rows) against g_j, on the group's Gramian M; a fix adds its
        coefficient to ai[j] in place."""
        ni, nj = max(float(ai @ M @ ai), 0.0) ** 0.5, float(M[j, j]) ** 0.5
        if ni == 0 or nj == 0:
            return False
        phi = min(max(float(ai @ M[:, j]) / (ni * nj), -1.0), 1.0)  # a cosine, whatever the rounding
        target = self.target.get(key, 0.0)
        fixed = phi < target
        if fixed:
            coef = ni * (target * (1 - phi**2) ** 0.5 - phi * (1 - target**2) ** 0.5) / (nj * (1 - target**2) ** 0.5)
            ai[j] += coef  # g_i^PC += coef g_j
            self.applied += 1
        if fixed or self.update == "always":
            self.target[key] = (1 - self.beta) * target + self.beta * phi
        return fixed

    def epoch_record(self) -> dict[str, float]:
        record: dict[str, float] = {"gradvac/altered": self.altered, "gradvac/rows": self.rows}
        for pair, n in self.checks.items():
            record[f"gradvac/{pair}/fixes"] = self.fixes.get(pair, 0)
            record[f"gradvac/{pair}/checks"] = n
        self.reset_counts()
        return record

    def state_dict(self) -> dict:
        counts = {"fixes": dict(self.fixes), "checks": dict(self.checks), "rows": self.rows, "altered": self.altered}
        return {"target": dict(self.target), "applied": self.applied, "counts": counts}

    def load_state_dict(self, state: dict) -> None:
        self.target = dict(state.get("target", {}))
        self.applied = state.get("applied", 0)
        counts = state.get("counts", {})
        self.fixes, self.checks = dict(counts.get("fixes", {})), dict(counts.get("checks", {}))
        self.rows, self.altered = counts.get("rows", 0), counts.get("altered", 0)
