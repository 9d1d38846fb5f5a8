"""`minbert analyze RUN_DIR`: what report 001 and report 003 look at, as files a person opens.

- plots/sst_confusion.png (+ sst_confusion.json): SST dev confusion matrix, each true class's row normalized
- plots/sst_tsne.png: t-SNE of the SST dev sentence embeddings, coloured by gold label
- plots/conflicts.png: per epoch and task pair, the number of negative gradient cosines and their mean
  (runs trained with `conflict_stats: true`) and GradVac's fixes (runs with `combiner: gradvac`): report 003's
  Figure 5
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from minbert.errors import MinbertError
from minbert.files import atomic_write_text, check_new_files, read_metrics
from minbert.plot import as_point, plt, save_figure

log = logging.getLogger(__name__)

SENTIMENT = ["negative", "somewhat neg.", "neutral", "somewhat pos.", "positive"]
SST_FILES = ("sst_confusion.json", "sst_confusion.png", "sst_tsne.png")  # what analyze writes into RUN/plots
PERPLEXITY = (1.0, 100.0)  # t-SNE's effective number of neighbours: 5 to 50 is usual


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts normalized per true class (row): entry [i, j] is the share of class i predicted as j."""
    m = np.zeros((k, k))
    np.add.at(m, (labels, preds), 1)
    return m / np.maximum(m.sum(1, keepdims=True), 1)


def plot_confusion(m: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="white" if m[i, j] > 0.5 else "black")
    ticks = SENTIMENT[: m.shape[0]] if m.shape[0] == 5 else range(m.shape[0])
    ax.set(xticks=range(m.shape[0]), yticks=range(m.shape[0]), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(ticks, rotation=30, ha="right")
    ax.set_yticklabels(ticks)
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def plot_tsne(emb: np.ndarray, labels: np.ndarray, path: Path, title: str, perplexity: float, seed: int) -> Path | None:
    from sklearn.manifold import TSNE

    # t-SNE needs more points than its perplexity: a small dev set (eval_limit, a user's own file) gets a smaller one
    fit = min(perplexity, (len(emb) - 1) / 3)
    if fit < 1:
        log.warning("%s: skipped: t-SNE needs at least 4 examples, the dev set has %d", path.name, len(emb))
        return None
    if fit < perplexity:
        log.warning("%s: perplexity %g lowered to %.3g for %d examples", path.name, perplexity, fit, len(emb))
    xy = TSNE(n_components=2, perplexity=fit, init="pca", random_state=seed).fit_transform(emb)
    fig, ax = plt.subplots(figsize=(6, 5))
    for c in sorted(set(labels.tolist())):
        sel = labels == c
        ax.scatter(
            xy[sel, 0], xy[sel, 1], s=6, alpha=0.7, label=SENTIMENT[c] if len(set(labels.tolist())) == 5 else str(c)
        )
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(markerscale=2, fontsize=8)
    return save_figure(fig, path)


def conflict_records(run: Path) -> list[dict]:
    """The epochs' records of gradient-conflict statistics (conflict_stats: true) or of what GradVac did."""
    return [r for r in read_metrics(run / "metrics.jsonl") if any(k.startswith(("conflict/", "gradvac/")) for k in r)]


def plot_conflicts(run: Path, records: list[dict] | None = None) -> Path | None:
    """Report 003's Figure 5: per epoch and task pair, the steps whose gradient cosine was negative and the mean
    cosine (conflict statistics), and GradVac's fixes (a task's gradient raised to its target cosine with another's:
    `gradvac/a-b/fixes`, a adjusted towards b) with the share of task-gradient rows it altered."""
    records = conflict_records(run) if records is None else records
    if not records:
        return None
    pairs = sorted({k.split("/")[1] for r in records for k in r if k.startswith("conflict/")})
    fixed = sorted({k.split("/")[1] for r in records for k in r if k.startswith("gradvac/") and k.endswith("/fixes")})
    panels = (2 if pairs else 0) + (1 if fixed else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    axes = list(axes[0])
    epochs = [r["epoch"] for r in records]
    if pairs:
        a, b = axes.pop(0), axes.pop(0)
        for p in pairs:
            a.plot(epochs, [as_point(r.get(f"conflict/{p}/negative")) for r in records], marker="o", label=p)
            b.plot(epochs, [as_point(r.get(f"conflict/{p}/mean_cos")) for r in records], marker="o", label=p)
        a.set(xlabel="epoch", ylabel="steps with negative cosine", title="gradient conflicts per task pair")
        b.set(xlabel="epoch", ylabel="mean cosine", title="mean gradient cosine per task pair")
    if fixed:
        c = axes.pop(0)
        for p in fixed:
            c.plot(epochs, [as_point(r.get(f"gradvac/{p}/fixes")) for r in records], marker="o", label=p)
        share = [
            f"{as_point(r.get('gradvac/altered')):.0f}/{as_point(r.get('gradvac/rows')):.0f}"
            for r in records
            if r.get("gradvac/rows")
        ]
        title = "GradVac fixes per task pair" + (f"\nrows altered per epoch: {', '.join(share)}" if share else "")
        c.set(xlabel="epoch", ylabel="GradVac fixes (adjusted task - other task)", title=title)
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, run / "plots" / "conflicts.png")


def analyze(run: Path, perplexity: float = 30.0, data_dir: str | None = None, overwrite: bool = False) -> list[Path]:
    """The files of the module's docstring that the run has data for, in RUN/plots. Before any work: `perplexity`
    in PERPLEXITY, something to analyze (an sst task, or conflict statistics), and none of the files there unless
    `overwrite`."""
    from minbert.multitask.run import load_data, load_run, load_run_config

    low, high = PERPLEXITY
    if not low <= perplexity <= high:  # NaN too
        raise MinbertError(
            f"--perplexity {perplexity:g}: must be a number from {low:g} to {high:g} (t-SNE's effective number of "
            "neighbours; 5 to 50 is usual, report 001 used 30 and 50)"
        )
    cfg = load_run_config(run, data_dir)
    conflicts = conflict_records(run)
    sst = "sst" in cfg.tasks
    if not sst and not conflicts:
        raise MinbertError(
            f"{run}: nothing to analyze: analyze draws the sst task's confusion matrix and t-SNE, and gradient "
            f"conflicts of runs trained with conflict_stats=true; this run has tasks {', '.join(cfg.tasks)} and no "
            "conflict statistics"
        )
    planned = [run / "plots" / f for f in SST_FILES if sst] + ([run / "plots" / "conflicts.png"] if conflicts else [])
    check_new_files(planned, overwrite, "another run, or move the earlier analysis away")
    if not sst:
        log.warning("%s: no sst task: only the gradient-conflict plot (the confusion matrix and t-SNE are SST's)", run)
    written = []
    if sst:
        r = load_run(run, cfg=cfg)
        data = load_data(cfg.restricted_to(["sst"]), r.tok, ("dev",))["dev"]["sst"]
        labels = data.labels.long().numpy()
        preds = r.runner.predict("sst", data).long().numpy()
        m = confusion_matrix(preds, labels, 5)
        (run / "plots").mkdir(exist_ok=True)
        atomic_write_text(
            run / "plots" / "sst_confusion.json",
            json.dumps(
                {"rows_true_cols_predicted": m.round(4).tolist(), "accuracy": float((preds == labels).mean())}, indent=1
            ),
        )
        written.append(run / "plots" / "sst_confusion.json")
        written.append(
            plot_confusion(m, run / "plots" / "sst_confusion.png", f"SST dev, normalized per true class ({run.name})")
        )
        emb = r.runner.sentences("sst", data.sentences)
        emb = emb[torch.tensor([ix[0] for ix in data.index])].float().cpu().numpy()
        written.append(
            plot_tsne(
                emb,
                labels,
                run / "plots" / "sst_tsne.png",
                f"t-SNE of SST dev embeddings ({run.name})",
                perplexity,
                cfg.seed,
            )
        )
        written = [w for w in written if w is not None]
    if conflicts:
        written.append(plot_conflicts(run, conflicts))
    return written
