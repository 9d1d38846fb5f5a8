"""`minbert sweep SWEEP.yaml`: one base config, a set of variants (named override lists, or a grid of values) and
a list of seeds -> one `minbert train` run per (variant, seed), one after another, then a table of mean +- std
over seeds per variant (markdown and CSV) and a chart.

    base: configs/best.yaml          # a train config (path relative to the sweep file, else to the working dir)
    budget: false                    # true: apply the base config's budget section
    overrides: [epochs=2]            # applied to every run
    variants:                        # named override lists; the first is the baseline the others are compared to
      baseline: []
      pcgrad: [combiner=pcgrad]
    grid:                            # or (and) a grid: every combination of these values becomes a variant
      lr: [5.0e-5, 8.0e-5]
    seeds: [1, 2, 3]
    out: runs/sweeps/example         # run directories: OUT/<variant>/seed<k>
    report: results                  # the table's files: OUT/<report>.md, .csv, .png (two sweeps sharing an out)

A variant can also be a mapping, for a row of a published table (configs/reports/NNN.yaml):

    variants:
      multitask-mse:
        overrides: [tasks.sts.head=cosine]
        published: {sst: 0.504, quora: 0.785, sts: 0.624}   # dev as the report printed it; STS as Pearson r
        # optional: overall: 0.673, scale: mean   (the report's own overall and its formula, mean of acc, acc, r)

and the table then shows the published numbers beside minbert's, both overall on CS224N's scale,
(SST acc + Quora acc + (STS r + 1) / 2) / 3, with each row's rank among the published and among minbert's rows.

From the command line: `--budget STEPS` bounds every run to STEPS optimizer steps (each variant keeps its epochs;
steps_per_epoch becomes STEPS // epochs) and puts the runs in OUT-STEPSsteps; `--seeds 1 2 3` replaces the seeds;
`--only a,b` runs those variants alone; `key=value` overrides after the file apply to every run (after the file's
own `overrides`, before each variant's).

Resumable: a run with a summary.json is done and skipped, one with a checkpoint is resumed (`train --resume`), any
other leftover folder is started again. A kept run whose saved config differs from what its variant gives now is
refused before any work (its numbers would stand for another setting). Each run is its own process, so a crash or
kill loses at most that run's progress since its last checkpoint. Equal-time budgets: put `max_minutes=N` in
`overrides`.

Where a search beats a grid, a `search:` section replaces `variants`/`grid` and Optuna's TPE sampler picks each
trial's values (`pip install optuna`, or the `search` extra); every trial runs all `seeds` and is scored by the mean
of one dev metric. The study lives in OUT/optuna.journal, so the same command continues it:

    search:
      trials: 12
      metric: overall                                   # a dev metric of summary.json
      params:
        lr: {low: 2.0e-5, high: 2.0e-4, log: true}
        head_lr_mult: {choices: [1, 3, 10, 30]}
        epochs: {low: 1, high: 4, int: true}
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minbert.compare import COLUMNS
from minbert.config import load_yaml
from minbert.errors import MinbertError
from minbert.files import atomic_write_text, read_summary

METRICS = [(key, title.removeprefix("dev ")) for key, title in COLUMNS]  # minbert compare's columns
KEYS = {"base", "budget", "overrides", "variants", "grid", "search", "seeds", "out", "report"}


@dataclass(frozen=True)
class Sweep:
    base: Path
    out: Path
    seeds: tuple[int, ...]
    variants: dict[str, tuple[str, ...]]  # name -> overrides (after the sweep-wide ones)
    budget: bool = False
    overrides: tuple[str, ...] = field(default_factory=tuple)
    search: dict | None = None  # Optuna: {trials, metric, params}
    report: str = "results"  # OUT/<report>.md, .csv, .png
    published: dict[str, dict] = field(default_factory=dict)  # variant -> {sst, quora, sts[, overall, scale]}

    def runs(self):
        """(variant, seed, run directory, train arguments) in the order they run: seed by seed, so a partial sweep
        already has every variant at its first seeds."""
        for seed in self.seeds:
            for name, extra in self.variants.items():
                run = self.out / name / f"seed{seed}"
                args = [
                    str(self.base),
                    *(["--budget"] if self.budget else []),
                    *self.overrides,
                    *extra,
                    f"seed={seed}",
                    f"out={run}",
                ]
                yield name, seed, run, args


PUBLISHED = {"sst", "quora", "sts", "overall", "scale"}
SCALES = {"cs224n": "(SST acc + Quora acc + (STS r + 1) / 2) / 3", "mean": "(SST acc + Quora acc + STS r) / 3"}


def cs224n_overall(sst: float, quora: float, sts: float) -> float:
    """The CS224N project's overall score, the one minbert reports: STS's Pearson r mapped onto [0, 1] first."""
    return (sst + quora + (sts + 1) / 2) / 3


def _published(path: Path, name: str, value) -> dict:
    if not isinstance(value, dict) or not {"sst", "quora", "sts"} <= set(value) or set(value) - PUBLISHED:
        raise MinbertError(
            f"{path}: variants.{name}.published must be {{sst: ACC, quora: ACC, sts: R}} "
            f"(optional overall, scale: {' or '.join(SCALES)})"
        )
    for key in ("sst", "quora", "sts", "overall"):
        x = value.get(key, 0.0)
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not -1 <= x <= 1:
            raise MinbertError(f"{path}: variants.{name}.published.{key}: {x!r} is not a number in [-1, 1]")
    if value.get("scale", "cs224n") not in SCALES:
        raise MinbertError(f"{path}: variants.{name}.published.scale: {value['scale']!r}; valid: {', '.join(SCALES)}")
    return dict(value)


def load_sweep(
    path: str | Path,
    steps: int | None = None,
    seeds: list[int] | None = None,
    only: list[str] | None = None,
    extra: list[str] = (),
) -> Sweep:
    """The sweep file, with the command line's --budget STEPS, --seeds, --only and key=value overrides."""
    path = Path(path)
    raw = load_yaml(path)
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise MinbertError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(KEYS))}")
    if "base" not in raw:
        raise MinbertError(f"{path}: 'base' missing: name the train config every run starts from")
    base = Path(raw["base"])
    if not base.is_absolute() and not base.is_file() and (path.parent / base).is_file():
        base = path.parent / base
    if not base.is_file():
        raise MinbertError(
            f"{path}: base {raw['base']!r} not found (relative to {path.parent} or the working directory)"
        )
    variants: dict[str, tuple[str, ...]] = {}
    published: dict[str, dict] = {}
    for name, spec in (raw.get("variants") or {}).items():
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"overrides", "published"})
            if unknown:
                raise MinbertError(
                    f"{path}: variants.{name}: unknown key(s) {', '.join(unknown)}; valid: overrides, published"
                )
            if "published" in spec:
                published[str(name)] = _published(path, name, spec["published"])
            spec = spec.get("overrides") or []
        if not isinstance(spec, list):
            raise MinbertError(f"{path}: variants.{name} must be a list of key=value overrides")
        if not str(name) or any(c in str(name) for c in "/ \\"):
            raise MinbertError(f"{path}: variant name {name!r} names a folder: no spaces or slashes")
        variants[str(name)] = tuple(str(x) for x in spec)
    grid = raw.get("grid") or {}
    if grid:
        if not all(isinstance(v, list) and v for v in grid.values()):
            raise MinbertError(f"{path}: every grid key needs a non-empty list of values")
        for combo in itertools.product(*grid.values()):
            extra = tuple(f"{k}={v}" for k, v in zip(grid, combo))
            variants[",".join(extra)] = extra
    search = raw.get("search")
    if search is not None:
        if variants:
            raise MinbertError(f"{path}: give either search or variants/grid, not both")
        check_search(path, search)
    if not variants:
        variants = {"base": ()}
    if only:
        missing = [v for v in only if v not in variants]
        if missing:
            raise MinbertError(f"--only {missing[0]!r}: not a variant of {path}; its variants: {', '.join(variants)}")
        variants = {v: variants[v] for v in variants if v in only}
    seeds = seeds if seeds is not None else raw.get("seeds", [11711])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise MinbertError(f"{path}: seeds must be a non-empty list of integers (leave the key out for one run)")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise MinbertError(f"{path}: seed {repeated[0]} is listed twice: one run would count as two; list each once")
    out = Path(raw.get("out") or f"runs/sweeps/{path.stem}")
    overrides = tuple(str(x) for x in raw.get("overrides") or []) + tuple(extra)
    if steps is not None:
        if search is not None:
            raise MinbertError("--budget STEPS bounds a sweep's variants; a search's trials take theirs from the file")
        variants = {
            name: v + (_steps_per_epoch(name, base, overrides + v, steps, bool(raw.get("budget"))),)
            for name, v in variants.items()
        }
        out = out.with_name(f"{out.name}-{steps}steps")
    sweep = Sweep(
        base,
        out,
        tuple(seeds),
        variants,
        bool(raw.get("budget", False)),
        overrides,
        search,
        _report_name(path, raw.get("report", "results")),
        {k: v for k, v in published.items() if k in variants},
    )
    check(sweep)
    return sweep


def _steps_per_epoch(name: str, base: Path, overrides: tuple[str, ...], steps: int, budget: bool) -> str:
    """The override that bounds one variant to `steps` optimizer steps over its own number of epochs."""
    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig

    try:
        epochs = load_config(TrainConfig, base, list(overrides), budget=budget).epochs
    except MinbertError as e:
        raise MinbertError(f"variant {name}: {e}") from None
    if steps < epochs:
        raise MinbertError(f"--budget {steps}: variant {name} has {epochs} epochs; give at least one step per epoch")
    return f"steps_per_epoch={steps // epochs}"


def _report_name(path: Path, name) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise MinbertError(f"{path}: report {name!r} must be a file name stem (no spaces or slashes), e.g. results")
    return name


def check(sweep: Sweep) -> None:
    """Every run's config must load and validate before the first run starts."""
    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig

    for name, _, run, args in sweep.runs():
        overrides = [a for a in args[1:] if a != "--budget"]
        try:
            cfg = load_config(TrainConfig, args[0], overrides, budget=sweep.budget).validate()
        except MinbertError as e:
            raise MinbertError(f"variant {name}: {e}") from None
        if state(run) != "new":
            check_unchanged(run, name, cfg)


def check_unchanged(run: Path, name: str, cfg) -> None:
    """A run kept from earlier (done, or to resume) must have been trained with the config its variant gives now:
    otherwise its numbers would silently stand for another setting. Where its data was read may differ."""
    from minbert.config import from_dict
    from minbert.multitask.config import TrainConfig

    saved = flat(dataclasses.asdict(from_dict(TrainConfig, load_yaml(run / "config.yaml"))))
    now = flat(dataclasses.asdict(cfg))
    for key in sorted(saved.keys() | now.keys()):
        if key not in ("data_dir", "out") and saved.get(key) != now.get(key):
            raise MinbertError(
                f"{run}: trained with {key}={saved.get(key)!r}, but variant {name} now gives {now.get(key)!r}; "
                "move the run away to train it again, or give the sweep another out"
            )


def flat(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_search(path: Path, search) -> None:
    if not isinstance(search, dict) or not isinstance(search.get("params"), dict) or not search["params"]:
        raise MinbertError(f"{path}: search needs params: {{key: {{low: .., high: ..}} or {{choices: [..]}}}}")
    unknown = sorted(set(search) - {"trials", "metric", "params"})
    if unknown:
        raise MinbertError(f"{path}: search: unknown key(s) {', '.join(unknown)}; valid: trials, metric, params")
    if not isinstance(search.get("trials", 10), int) or search.get("trials", 10) < 1:
        raise MinbertError(f"{path}: search.trials must be a positive integer")
    for key, spec in search["params"].items():
        if not isinstance(spec, dict) or not ({"low", "high"} <= set(spec) or "choices" in spec):
            raise MinbertError(
                f"{path}: search.params.{key}: give {{low: .., high: ..}} (optional log, int) or {{choices: [..]}}"
            )


def distributions(search: dict) -> dict:
    import optuna.distributions as od

    out = {}
    for key, spec in search["params"].items():
        if "choices" in spec:
            out[key] = od.CategoricalDistribution(spec["choices"])
        elif spec.get("int"):
            out[key] = od.IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            out[key] = od.FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return out


def run_search(sweep: Sweep) -> str:
    """Optuna's ask-and-tell loop over trials; each trial is a variant `trial-NNN` run on every seed. A trial cut
    short by a kill is still RUNNING in the journal: it is finished (its runs resumed) before new ones are asked."""
    try:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
    except ImportError:
        raise MinbertError("search: needs Optuna: pip install optuna (or minbert's 'search' extra)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep.out.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(sweep.out / "optuna.journal")))
    study = optuna.create_study(
        study_name="minbert",
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=sweep.seeds[0]),
    )
    metric, trials, dists = (
        sweep.search.get("metric", "overall"),
        sweep.search.get("trials", 10),
        distributions(sweep.search),
    )
    while True:
        states = [t.state for t in study.trials]
        running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
        if not running and states.count(optuna.trial.TrialState.COMPLETE) >= trials:
            break
        trial = running[0] if running else study.ask(dists)
        params = trial.params
        name = f"trial-{trial.number:03d}"
        one = dataclasses.replace(sweep, variants={name: tuple(f"{k}={v}" for k, v in params.items())}, search=None)
        check(one)
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in params.items()), flush=True)
        run_sweep(one)
        (r,) = rows(one)
        if metric not in r.mean:
            raise MinbertError(f"search.metric {metric!r}: not among the dev metrics {', '.join(k for k in r.mean)}")
        study.tell(trial.number, r.mean[metric])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done.sort(key=lambda t: -t.value)
    variants = {f"trial-{t.number:03d}": tuple(f"{k}={v}" for k, v in t.params.items()) for t in done}
    md = report(dataclasses.replace(sweep, variants=variants, search=None))
    best = done[0]
    return (
        md
        + f"\n\nbest trial: trial-{best.number:03d} ({metric} {best.value:.4f}): "
        + " ".join(f"{k}={v}" for k, v in best.params.items())
    )


def state(run: Path) -> str:
    if (run / "summary.json").is_file():
        return "done"
    if (run / "last.json").is_file():
        return "resume"
    return "new"


def run_sweep(sweep: Sweep, dry_run: bool = False) -> str:
    todo = list(sweep.runs())
    for i, (name, seed, run, args) in enumerate(todo, 1):
        kind = state(run)
        cmd = [sys.executable, "-m", "minbert", "train", *(["--resume", str(run)] if kind == "resume" else args)]
        print(
            f"[{i}/{len(todo)}] {name} seed {seed}: {kind}" + ("" if kind == "done" else "  " + " ".join(cmd[3:])),
            flush=True,
        )
        if kind == "done" or dry_run:
            continue
        if kind == "new" and run.exists():
            shutil.rmtree(run)  # a start that died before its first checkpoint
        done = subprocess.run(cmd)
        if done.returncode:
            raise MinbertError(
                f"{run}: minbert train exited with {done.returncode}; "
                "fix it and run the sweep again (finished runs are kept)"
            )
        report(sweep)  # the table so far, after every run
    return "" if dry_run else report(sweep)


@dataclass
class Row:
    name: str
    n: int
    mean: dict[str, float]
    std: dict[str, float]


def rows(sweep: Sweep) -> list[Row]:
    out = []
    for name in sweep.variants:
        summaries = [read_summary(r) for n, _, r, _ in sweep.runs() if n == name and (r / "summary.json").is_file()]
        if not summaries:
            continue
        values = {k: [s["dev"][k] for s in summaries if k in s["dev"]] for k, _ in METRICS}
        values["wall_time_s"] = [s["wall_time_s"] for s in summaries]
        values["steps"] = [s["steps"] for s in summaries]
        mean = {k: float(np.mean(v)) for k, v in values.items() if v}
        std = {k: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for k, v in values.items() if v}
        out.append(Row(name, len(summaries), mean, std))
    return out


def report(sweep: Sweep) -> str:
    """Writes OUT/<report>.md, .csv and .png (results by default); returns the markdown table."""
    table = rows(sweep)
    if not table:
        raise MinbertError(f"{sweep.out}: no finished runs yet")
    present = [(k, t) for k, t in METRICS if any(k in r.mean for r in table)]
    base = table[0]
    lines = [
        "| variant | n | "
        + " | ".join(t for _, t in present)
        + " | Δ overall vs "
        + base.name
        + " | wall time | steps |",
        "|---|---|" + "---|" * (len(present) + 3),
    ]
    pub = {r.name: sweep.published[r.name] for r in table if r.name in sweep.published}
    if pub:
        lines[0] += " published SST / Quora / STS r | published overall | rank published / minbert |"
        lines[1] += "---|---|---|"
        ranked = [r for r in table if r.name in pub and "overall" in r.mean]
        ours = rank({r.name: r.mean["overall"] for r in ranked})
        theirs = rank({r.name: published_overall(pub[r.name]) for r in ranked})
    for r in table:
        cells = [fmt(r.mean.get(k), r.std.get(k)) for k, _ in present]
        line = (
            f"| {r.name} | {r.n} | " + " | ".join(cells) + f" | {delta(r, base)} | "
            f"{r.mean['wall_time_s'] / 60:.1f} min | {r.mean['steps']:.0f} |"
        )
        if pub:
            p = pub.get(r.name)
            line += (
                f" {p['sst']:.3f} / {p['quora']:.3f} / {p['sts']:.3f} | {published_cell(p)} | "
                f"{theirs.get(r.name, '-')} / {ours.get(r.name, '-')} |"
                if p
                else " - | - | - |"
            )
        lines.append(line)
    lines.append("")
    lines.append(
        "mean ± sample std over seeds; Δ: difference of means ± its standard error, * where it exceeds twice the "
        "standard error (beyond seed noise at this n)."
    )
    if pub:
        lines.append(
            "Published: the report's dev numbers (its checkpoint, data and budget); overall on CS224N's scale, "
            f"{SCALES['cs224n']}, as minbert's, with the report's own number in brackets where it used another "
            "scale. Rank: 1 = best overall among the rows with published numbers that have finished here."
        )
    md = "\n".join(lines)
    sweep.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep.out / f"{sweep.report}.md", md + "\n")
    buf = io.StringIO(newline="")  # the CSV is written whole, as the markdown
    w = csv.writer(buf)
    w.writerow(
        ["variant", "n"]
        + [c for k, _ in present for c in (f"{k} mean", f"{k} std")]
        + ["wall_time_s mean", "steps mean"]
    )
    for r in table:
        w.writerow(
            [r.name, r.n]
            + [x for k, _ in present for x in (r.mean.get(k), r.std.get(k))]
            + [r.mean["wall_time_s"], r.mean["steps"]]
        )
    atomic_write_text(sweep.out / f"{sweep.report}.csv", buf.getvalue())
    chart(table, present, sweep.out / f"{sweep.report}.png")
    return md


def published_overall(p: dict) -> float:
    return cs224n_overall(p["sst"], p["quora"], p["sts"])


def published_cell(p: dict) -> str:
    ours = f"{published_overall(p):.3f}"
    if "overall" in p and p.get("scale", "cs224n") != "cs224n":
        return f"{ours} ({p['overall']:.3f}, {p['scale']})"
    return ours


def rank(scores: dict[str, float]) -> dict[str, int]:
    order = sorted(scores, key=lambda k: -scores[k])
    return {k: i for i, k in enumerate(order, 1)}


def fmt(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def delta(r: Row, base: Row) -> str:
    if r is base:
        return "-"
    d = r.mean["overall"] - base.mean["overall"]
    if r.n < 2 or base.n < 2:
        return f"{d:+.4f}"
    se = math.sqrt(r.std["overall"] ** 2 / r.n + base.std["overall"] ** 2 / base.n)
    return f"{d:+.4f} ± {se:.4f}" + (" *" if abs(d) > 2 * se else "")


def chart(table: list[Row], present, path: Path) -> None:
    from minbert.plot import plt, save_figure

    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 0.35 * len(table) + 1.8), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(table))
    for ax, (k, title) in zip(axes, present):
        means = [r.mean.get(k, np.nan) for r in table]
        stds = [0 if math.isnan(r.std.get(k, np.nan)) else r.std[k] for r in table]
        ax.barh(y, means, xerr=stds, color="tab:blue", alpha=0.7, capsize=3)
        lo = np.nanmin(np.array(means) - np.array(stds))
        hi = np.nanmax(np.array(means) + np.array(stds))
        ax.set_xlim(lo - 0.15 * (hi - lo + 1e-3), hi + 0.15 * (hi - lo + 1e-3))
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([f"{r.name} (n={r.n})" for r in table], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("dev metrics, mean ± std over seeds", fontsize=10)
    save_figure(fig, path)
