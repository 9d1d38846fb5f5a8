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

A staged recipe is variants in a chain: `init_from=@VARIANT` in a variant's overrides starts its runs from the
encoder of VARIANT's run of the same seed (an earlier variant; report 001's sentiment-MNRL stage, then multitask),
so the whole recipe runs with one `minbert sweep`.

From the command line: `--budget STEPS` bounds every run to STEPS optimizer steps (each variant keeps its epochs;
steps_per_epoch becomes STEPS // epochs) and puts the runs in OUT-STEPSsteps; `--seeds 1 2 3` replaces the seeds;
`--only a,b` runs those variants alone; `key=value` overrides after the file apply to every run (after the file's
own `overrides`, before each variant's).

Resumable: a run with a summary.json is done and skipped, one with a checkpoint is resumed (`train --resume`), any
other leftover folder is started again. Run folders (checkpoints, predictions) stay on the machine that ran them;
`--record DIR` keeps what the table needs where it outlives the machine (a folder in git): each finished run's
config.yaml, summary.json and metrics.jsonl are copied to DIR/<out's name>/<variant>/seed<k>, and on a machine
without the run folder they are copied back, so that the sweep skips that run and its table counts it (not where a
stage still to run starts from it: that needs its weights, so it runs again). A kept run whose saved config differs
from what its variant gives now is refused before any work (its numbers would stand for another setting). Each run
is its own process, so a crash or kill loses at most that run's progress since its last checkpoint. Equal-time
budgets: put `max_minutes=N` in `overrides`.

Where a search beats a grid, a `search:` section replaces `variants`/`grid` and Optuna's TPE sampler picks each
trial's values (`pip install optuna`, or the `search` extra); every trial runs all `seeds` and is scored by the mean
of one dev metric. The study lives in OUT/optuna.journal, so the same command continues it:

    search:
      trials: 12
      metric: overall                                   # a dev metric of summary.json: overall, sst/acc, ...
      params:
        lr: {low: 2.0e-5, high: 2.0e-4, log: true}
        head_lr_mult: {choices: [1, 3, 10, 30]}
        epochs: {low: 1, high: 4, int: true}

The file is read like a config: every key's type and range, every run's config, a search's metric (overall or
<task>/<metric> of the base config's tasks: sst/acc, quora/acc, sts/pearson, a custom task's) and each parameter's
ends or choices are checked when it loads, before any folder, journal or run is made.
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
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minbert.compare import COLUMNS
from minbert.config import load_yaml
from minbert.errors import MinbertError
from minbert.files import atomic_write_text, check_writable, read_summary

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
                    *(self.stage(word, seed) for word in extra),
                    f"seed={seed}",
                    f"out={run}",
                ]
                yield name, seed, run, args

    def stage(self, word: str, seed: int) -> str:
        """`init_from=@VARIANT` -> that variant's run of this seed (a staged recipe's previous stage)."""
        source = source_variant(word)
        return f"init_from={self.out / source / f'seed{seed}'}" if source else word


def source_variant(word: str) -> str | None:
    """The variant an override `init_from=@VARIANT` names, else None."""
    return word.split("@", 1)[1] if word.startswith("init_from=@") else None


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
    scale = value.get("scale", "cs224n")
    if not isinstance(scale, str) or scale not in SCALES:
        raise MinbertError(f"{path}: variants.{name}.published.scale: {scale!r}; valid: {', '.join(SCALES)}")
    return dict(value)


SCALAR = (str, int, float)  # what a grid value or a search choice may be (bools are ints)
GRID_MOST = 10_000  # variants a grid may make: each is a training run per seed; more is a typo, or a job for search
SET_BY_SWEEP = ("seed", "out")  # every run's own: an override of them would be silently replaced


def load_sweep(
    path: str | Path,
    steps: int | None = None,
    seeds: list[int] | None = None,
    only: list[str] | None = None,
    extra: list[str] = (),
) -> Sweep:
    """The sweep file, with the command line's --budget STEPS, --seeds, --only and key=value overrides. Every key
    is checked here, read like a config (its type, its range, every run's config validated, a search's metric and
    parameter values), before any folder, Optuna journal or run is made."""
    path = Path(path)
    raw = load_yaml(path)
    unknown = sorted(map(str, set(raw) - KEYS))
    if unknown:
        raise MinbertError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(KEYS))}")
    base = _base(path, raw)
    budget = raw.get("budget", False)
    if not isinstance(budget, bool):
        raise MinbertError(f"{path}: budget: {budget!r} must be true or false (true: apply the base's budget section)")
    overrides = _override_list(path, "overrides", raw.get("overrides")) + _override_list(
        "command line", "overrides", list(extra)
    )
    variants, published = _variants(path, raw.get("variants"))
    for name, combo in _grid(path, raw.get("grid")).items():
        if name in variants:
            raise MinbertError(f"{path}: grid variant {name} has the name of a variant under variants; rename one")
        variants[name] = combo
    search = raw.get("search")
    if search is not None:
        if variants:
            raise MinbertError(f"{path}: give either search or variants/grid, not both")
        search = check_search(path, search)
    if not variants:
        variants = {"base": ()}
    if only:
        missing = [v for v in only if v not in variants]
        if missing:
            raise MinbertError(f"--only {missing[0]!r}: not a variant of {path}; its variants: {', '.join(variants)}")
        variants = {v: variants[v] for v in variants if v in only}
    seeds = _seeds(path, seeds if seeds is not None else raw.get("seeds", [11711]))
    out = _out(path, raw.get("out"))
    if steps is not None:
        if search is not None:
            raise MinbertError("--budget STEPS bounds a sweep's variants; a search's trials take theirs from the file")
        variants, out = _bounded(steps, variants, out, base, overrides, budget)
    sweep = Sweep(
        base,
        out,
        tuple(seeds),
        variants,
        budget,
        overrides,
        search,
        _report_name(path, raw.get("report", "results")),
        {k: v for k, v in published.items() if k in variants},
    )
    check(sweep)
    if search is not None:
        check_search_values(path, sweep)
    return sweep


def _seeds(path: Path, seeds) -> list[int]:
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise MinbertError(f"{path}: seeds must be a non-empty list of integers (leave the key out for one run)")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise MinbertError(f"{path}: seed {repeated[0]} is listed twice: one run would count as two; list each once")
    return seeds


def _bounded(steps, variants: dict, out: Path, base: Path, overrides: tuple, budget: bool) -> tuple[dict, Path]:
    """--budget STEPS: each variant bounded to STEPS optimizer steps over its own epochs; the runs in OUT-STEPSsteps."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MinbertError(f"--budget {steps!r}: STEPS must be a whole number >= 1")
    variants = {name: v + (_steps_per_epoch(name, base, overrides + v, steps, budget),) for name, v in variants.items()}
    return variants, (out if out.name else out.absolute()).with_name(f"{out.absolute().name}-{steps}steps")


def _base(path: Path, raw: dict) -> Path:
    """The base config: the path as written (absolute, or from the working directory), else beside the sweep file."""
    if "base" not in raw:
        raise MinbertError(f"{path}: 'base' missing: name the train config every run starts from")
    name = raw["base"]
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise MinbertError(f"{path}: base: {name!r} is not a path; name the train config (a YAML file) as text")
    base = Path(name)
    tried = [base] if base.is_absolute() else [base, path.parent / base]
    for candidate in tried:
        if candidate.is_file():
            _not_a_sweep(path, name, candidate)
            return candidate
    folder = next((c for c in tried if c.is_dir()), None)
    if folder is not None:
        raise MinbertError(f"{path}: base {name!r}: {folder} is a folder: name the YAML file (a train config) in it")
    raise MinbertError(f"{path}: base {name!r} not found (relative to {path.parent} or the working directory)")


def _not_a_sweep(path: Path, name, base: Path) -> None:
    """base names a train config; a sweep file there (its own, or another) is refused by name."""
    try:
        raw = load_yaml(base)
    except MinbertError:
        return  # its own error comes where the config loads, naming it
    if isinstance(raw, dict) and {"base", "variants", "grid", "search"} & set(raw):
        raise MinbertError(
            f"{path}: base {name!r} is a sweep file ({base}), not a train config; name the config the variants "
            "change, e.g. configs/quickstart.yaml"
        )


def _override_list(where, key: str, value) -> tuple[str, ...]:
    """A list of `key.sub=value` strings (None: none). A string alone is refused, not read letter by letter."""
    if value is None:
        return ()
    if isinstance(value, str):
        raise MinbertError(f"{where}: {key} must be a list of key=value overrides, e.g. [{value}]; got one string")
    if not isinstance(value, list):
        raise MinbertError(
            f"{where}: {key} must be a list of key=value overrides, e.g. [epochs=2]; got {type(value).__name__}"
        )
    for i, x in enumerate(value):
        if not isinstance(x, str):
            raise MinbertError(
                f"{where}: {key}[{i}]: {x!r:.60} is not a key=value override; write it as text, e.g. epochs=2 "
                "(quote a value that holds ': ' or braces)"
            )
        if x.split("=", 1)[0].strip() in SET_BY_SWEEP:
            raise MinbertError(
                f"{where}: {key}[{i}]: {x!r:.60}: the sweep sets every run's seed and out; list seeds under seeds "
                "and put the runs under out"
            )
    return tuple(value)


def _variant_name(path: Path, name, what: str = "variant name") -> str:
    """A variant's name is a folder of OUT: text without separators, spaces or control characters."""
    if isinstance(name, bool) or not isinstance(name, SCALAR):
        raise MinbertError(f"{path}: {what} {name!r:.60} must be text (it names the variant's folder)")
    text = str(name)
    if not text or text in (".", "..") or not text.isprintable() or any(c in text for c in "/ \\"):
        raise MinbertError(f"{path}: {what} {text!r:.60} names a folder: no spaces, slashes or control characters")
    return text


def _variants(path: Path, raw) -> tuple[dict[str, tuple[str, ...]], dict[str, dict]]:
    """variants: name -> list of overrides, or name -> {overrides, published}."""
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise MinbertError(
            f"{path}: variants must map each variant's name to its overrides, e.g. {{baseline: [], pcgrad: "
            f"[combiner=pcgrad]}}; got a {type(raw).__name__}"
        )
    variants: dict[str, tuple[str, ...]] = {}
    published: dict[str, dict] = {}
    for name, spec in raw.items():
        name = _variant_name(path, name)
        if name in variants:
            raise MinbertError(f"{path}: variant {name} is listed twice; give each variant its own name")
        if isinstance(spec, dict):
            unknown = sorted(map(str, set(spec) - {"overrides", "published"}))
            if unknown:
                raise MinbertError(
                    f"{path}: variants.{name}: unknown key(s) {', '.join(unknown)}; valid: overrides, published"
                )
            if "published" in spec:
                published[name] = _published(path, name, spec["published"])
            spec = spec.get("overrides")
        variants[name] = _override_list(path, f"variants.{name}", spec)
    return variants, published


def _grid(path: Path, raw) -> dict[str, tuple[str, ...]]:
    """grid: key -> non-empty list of values; every combination is a variant named by its overrides."""
    if raw is None or raw == {}:
        return {}
    if not isinstance(raw, dict):
        raise MinbertError(
            f"{path}: grid must map each config key to its values, e.g. {{lr: [5.0e-5, 8.0e-5]}}; "
            f"got a {type(raw).__name__}"
        )
    size = 1
    for key, values in raw.items():
        if not isinstance(key, str) or not key or "=" in key or not key.isprintable():
            raise MinbertError(f"{path}: grid key {key!r:.60} must be a config key, e.g. lr or tasks.sst.dropout")
        if key in SET_BY_SWEEP:
            raise MinbertError(f"{path}: grid.{key}: the sweep sets every run's {key}; list seeds under seeds")
        if not isinstance(values, list) or not values:
            raise MinbertError(f"{path}: grid.{key} needs a non-empty list of values, e.g. {key}: [1, 2]")
        for v in values:
            if not isinstance(v, SCALAR):
                raise MinbertError(f"{path}: grid.{key}: {v!r:.60} must be a number, a string or true/false")
        size *= len(values)
    if size > GRID_MOST:
        raise MinbertError(
            f"{path}: grid makes {size} variants (more than {GRID_MOST}); narrow it, or use search: for many values"
        )
    variants = {}
    for combo in itertools.product(*raw.values()):
        overrides = tuple(f"{k}={v}" for k, v in zip(raw, combo))
        variants[",".join(f"{k}={_folder_safe(v)}" for k, v in zip(raw, combo))] = overrides
    return variants


def _folder_safe(value) -> str:
    """A grid value as part of its variant's folder name: a slash, a space or a control character %-escaped (a
    path D/x names the folder data_dir=D%2Fx, not two nested folders)."""
    text = str(value)
    if text.isprintable() and not any(c in text for c in "/ \\%"):
        return text
    return urllib.parse.quote(text, safe="")


def _out(path: Path, raw) -> Path:
    """Where the runs go (default runs/sweeps/<sweep file's name>): a folder, or one that can be made."""
    if raw is None:
        return Path(f"runs/sweeps/{path.stem}")
    if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
        raise MinbertError(f"{path}: out: {raw!r:.60} is not a path; name the folder the runs go to")
    out = Path(raw)
    try:
        check_writable(out, "another out")
    except (OSError, ValueError) as e:
        raise MinbertError(f"{path}: out {raw!r}: not a usable path ({e}); choose another out") from None
    if out.exists() and not out.is_dir():
        raise MinbertError(f"{path}: out {raw!r} is a file, not a folder; choose another out")
    return out


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
    from minbert.multitask.checks import check_effective
    from minbert.multitask.config import TrainConfig

    order = list(sweep.variants)
    for name, extra in sweep.variants.items():
        for source in filter(None, map(source_variant, extra)):
            if source not in order or order.index(source) >= order.index(name):
                raise MinbertError(
                    f"variant {name}: init_from=@{source} names no earlier variant of this sweep; list the stage it "
                    "starts from before it (with --only, include it)"
                )
    for name, _, run, args in sweep.runs():
        overrides = [a for a in args[1:] if a != "--budget"]
        try:
            cfg = load_config(TrainConfig, args[0], overrides, budget=sweep.budget).validate()
            check_effective(cfg)  # a setting the run would ignore: refused before the first run
        except MinbertError as e:
            raise MinbertError(f"variant {name}: {e}") from None
        if state(run) != "new":
            check_unchanged(run, name, cfg)
        elif run.exists() and not _restartable(run):
            what = "a file" if not run.is_dir() else f"a folder of files that are not a run's ({_first(run)})"
            raise MinbertError(
                f"{run}: is {what}, where variant {name}'s seed run goes; move it away, or give the sweep another out"
            )


def _restartable(run: Path) -> bool:
    """A new run's folder that exists: empty, or a start that died before its first checkpoint (its config.yaml
    and what a run writes first), which the sweep starts again."""
    from minbert.runs import RUN_FILES

    if not run.is_dir() or run.is_symlink():
        return False
    names = {p.name for p in run.iterdir()} - {".lock"}
    return not names or ("config.yaml" in names and names <= set(RUN_FILES))


def _first(run: Path) -> str:
    return sorted(p.name for p in run.iterdir())[0]


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


def check_search(path: Path, search) -> dict:
    """The search section's shape and ranges: {trials, metric, params}, with trials and metric filled in.
    Which metric and which parameter values the base config accepts is `check_search_values`'s part."""
    usage = "search needs params: {key: {low: .., high: ..} (optional log, int) or {choices: [..]}}"
    if not isinstance(search, dict) or not isinstance(search.get("params"), dict) or not search["params"]:
        raise MinbertError(f"{path}: {usage}")
    unknown = sorted(map(str, set(search) - {"trials", "metric", "params"}))
    if unknown:
        raise MinbertError(f"{path}: search: unknown key(s) {', '.join(unknown)}; valid: trials, metric, params")
    trials = search.get("trials", 10)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise MinbertError(f"{path}: search.trials: {trials!r} must be a whole number >= 1")
    metric = search.get("metric", "overall")
    if not isinstance(metric, str):
        raise MinbertError(f"{path}: search.metric: {metric!r:.60} must name a dev metric, e.g. overall")
    params = {}
    for key, spec in search["params"].items():
        if not isinstance(key, str) or not key or "=" in key or not key.isprintable():
            raise MinbertError(f"{path}: search.params: {key!r:.60} must be a config key, e.g. lr")
        if key in SET_BY_SWEEP:
            raise MinbertError(f"{path}: search.params.{key}: the sweep sets every run's {key}; not a parameter")
        params[key] = _param(path, f"search.params.{key}", spec)
    return {"trials": trials, "metric": metric, "params": params}


def _param(path: Path, where: str, spec) -> dict:
    """{choices: [..]} or {low, high[, log, int]}: numbers, low < high, log only above 0, int only whole numbers."""
    usage = "give {low: .., high: ..} (optional log: true, int: true) or {choices: [..]}"
    if not isinstance(spec, dict) or not ({"low", "high"} <= set(spec) or "choices" in spec):
        raise MinbertError(f"{path}: {where}: {usage}")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise MinbertError(f"{path}: {where}: choices stands alone (no low, high, log or int); {usage}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise MinbertError(f"{path}: {where}.choices must be a non-empty list, e.g. [1, 3, 10]")
        for c in choices:
            if not isinstance(c, SCALAR) or isinstance(c, float) and not math.isfinite(c):
                raise MinbertError(f"{path}: {where}.choices: {c!r:.60} must be a number, a string or true/false")
        return {"choices": list(choices)}
    unknown = sorted(map(str, set(spec) - {"low", "high", "log", "int"}))
    if unknown:
        raise MinbertError(f"{path}: {where}: unknown key(s) {', '.join(unknown)}; valid: low, high, log, int")
    for flag in ("log", "int"):
        if not isinstance(spec.get(flag, False), bool):
            raise MinbertError(f"{path}: {where}.{flag}: {spec[flag]!r:.60} must be true or false")
    whole = spec.get("int", False)
    for end in ("low", "high"):
        x = spec[end]
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise MinbertError(f"{path}: {where}.{end}: {x!r:.60} is not a number")
        if whole and x != int(x):
            raise MinbertError(f"{path}: {where}.{end}: {x!r} is not a whole number (int: true)")
    low, high = (int(spec[e]) if whole else float(spec[e]) for e in ("low", "high"))
    if not low < high:
        raise MinbertError(f"{path}: {where}: low {low!r} must be below high {high!r}")
    if spec.get("log") and low <= 0:
        raise MinbertError(f"{path}: {where}: log: true needs low > 0, got {low!r}")
    return {"low": low, "high": high, "log": spec.get("log", False), "int": whole}


def dev_metrics(cfg) -> list[str]:
    """The dev metrics of a run of `cfg`, as its summary.json holds them."""
    return ["overall"] + [f"{n}/{cfg.specs[n].metric_name}" for n in cfg.tasks]


def check_search_values(path: Path, sweep: Sweep) -> None:
    """Before the journal: the metric is one the base config's tasks report, and each parameter's ends (or every
    choice) give a config that validates - a typo in a key or a value out of range is found before a trial trains."""
    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig

    def config(overrides: list[str]):
        return load_config(TrainConfig, sweep.base, [*sweep.overrides, *overrides], budget=sweep.budget).validate()

    valid = dev_metrics(config([]))
    if sweep.search["metric"] not in valid:
        raise MinbertError(
            f"{path}: search.metric {sweep.search['metric']!r} is not a dev metric of the base config's tasks; "
            f"valid: {', '.join(valid)}"
        )
    for key, spec in sweep.search["params"].items():
        for value in spec.get("choices") or (spec["low"], spec["high"]):
            try:
                config([f"{key}={value}"])
            except MinbertError as e:
                raise MinbertError(f"{path}: search.params.{key}: {key}={value} does not validate: {e}") from None


def distributions(search: dict) -> dict:
    import optuna.distributions as od

    out = {}
    for key, spec in search["params"].items():
        if "choices" in spec:
            out[key] = od.CategoricalDistribution(spec["choices"])
        elif spec["int"]:
            out[key] = od.IntDistribution(spec["low"], spec["high"], log=spec["log"])
        else:
            out[key] = od.FloatDistribution(spec["low"], spec["high"], log=spec["log"])
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
    metric, trials, dists = sweep.search["metric"], sweep.search["trials"], distributions(sweep.search)
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


KEPT = ("config.yaml", "summary.json", "metrics.jsonl")  # what --record keeps of a finished run
RESTORED = ".restored"  # in a run folder restored from a record: its results, not its weights


def kept_at(record: Path, run: Path) -> Path:
    """Where --record keeps run OUT/<variant>/seed<k>: RECORD/<OUT's name>/<variant>/seed<k>."""
    return record / run.parent.parent.name / run.parent.name / run.name


def _copy_kept(src: Path, dest: Path) -> None:
    """src's KEPT files into dest (made where missing), replacing older copies; a KEPT file src lacks is removed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
        else:
            (dest / name).unlink(missing_ok=True)


def keep(sweep: Sweep, record: Path) -> list[Path]:
    """Copies each finished run's KEPT files into the record (a run restored from the record is there already).
    Returns the runs copied."""
    copied = [run for _, _, run, _ in sweep.runs() if state(run) == "done" and not (run / RESTORED).exists()]
    for run in copied:
        _copy_kept(run, kept_at(record, run))
    return copied


def restorable(sweep: Sweep, record: Path) -> tuple[set, set]:
    """What restore would do, doing nothing: the (variant, seed) keys of the record's finished runs it would copy in
    (a config.yaml and a summary.json kept, the run folder without them or holding a start that died before its first
    checkpoint), and those of runs restored earlier it would remove to train again. A stage still to run needs its
    source's weights (init_from=@VARIANT): that source is not restored, or, restored earlier, runs again, up the
    chain."""
    runs = {(name, seed): run for name, seed, run, _ in sweep.runs()}
    files = ("config.yaml", "summary.json")
    kept = {
        k
        for k, run in runs.items()
        if state(run) == "new"
        and (not run.exists() or _restartable(run))
        and all((kept_at(record, run) / f).is_file() for f in files)
    }
    weightless = {k for k, run in runs.items() if state(run) == "done" and (run / RESTORED).exists()}
    rerun: set = set()
    while True:
        todo = {k for k, run in runs.items() if k not in kept and state(run) != "done"} | rerun
        needed = {(source_variant(w), seed) for name, seed in todo for w in sweep.variants[name]}
        more = needed & (kept | weightless)
        if not more:
            break
        kept, weightless, rerun = kept - more, weightless - more, rerun | more
    return kept, rerun


def restore(sweep: Sweep, record: Path) -> list[Path]:
    """Copies the record's finished runs into their run folders, as restorable says, so the sweep skips them, and
    removes the restored runs a stage still to run needs the weights of. Returns the runs restored."""
    runs = {(name, seed): run for name, seed, run, _ in sweep.runs()}
    kept, rerun = restorable(sweep, record)
    for key in rerun:
        shutil.rmtree(runs[key])
    for key in kept:
        read_summary(kept_at(record, runs[key]))  # a broken copy: one line naming it, before any is restored
    for key in kept:
        run, tmp = runs[key], runs[key].with_name(f".{runs[key].name}.restoring")
        shutil.rmtree(tmp, ignore_errors=True)
        _copy_kept(kept_at(record, run), tmp)
        (tmp / RESTORED).write_text(f"restored from {kept_at(record, run)}\n")
        shutil.rmtree(run, ignore_errors=True)  # a start that died before its first checkpoint
        tmp.rename(run)
    return [runs[k] for k in runs if k in kept]


def use_record(sweep: Sweep, record: str | Path) -> Path:
    """--record DIR: the record's finished runs restored where their folders are not, each checked against what its
    variant gives now (a refused one is taken back out), and the finished runs here kept in it; returns DIR."""
    record = Path(record)
    check_writable(record / sweep.out.name, "another --record folder")
    restored = restore(sweep, record)
    if restored:
        print(f"{len(restored)} finished runs restored from {record}", flush=True)
        try:
            check(sweep)  # each restored run's config against what its variant gives now
        except MinbertError as e:
            for run in restored:
                shutil.rmtree(run, ignore_errors=True)
            raise MinbertError(f"{e} (restored from {record}: remove it there to train it again)") from None
    keep(sweep, record)
    return record


def run_sweep(sweep: Sweep, dry_run: bool = False, record: str | Path | None = None) -> str:
    if record is not None and not dry_run:
        record = use_record(sweep, record)
    kept, rerun = restorable(sweep, Path(record)) if record is not None and dry_run else (set(), set())
    todo = list(sweep.runs())
    for i, (name, seed, run, args) in enumerate(todo, 1):
        kind = label = state(run)
        if (name, seed) in kept:  # a real run restores it
            kind, label = "done", "done (in the record)"
        elif (name, seed) in rerun:  # restored earlier without its weights, which a stage to run needs
            kind = label = "new"
        cmd = [sys.executable, "-m", "minbert", "train", *(["--resume", str(run)] if kind == "resume" else args)]
        print(
            f"[{i}/{len(todo)}] {name} seed {seed}: {label}" + ("" if kind == "done" else "  " + " ".join(cmd[3:])),
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
        if record is not None:
            _copy_kept(run, kept_at(record, run))  # this run; use_record kept those finished before
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
        keys = [k for k, _ in METRICS]  # then a custom task's metric, which a search may score by
        keys += sorted({k for s in summaries for k in s["dev"]} - set(keys))
        values = {k: [s["dev"][k] for s in summaries if k in s["dev"]] for k in keys}
        for k in ("wall_time_s", "steps"):  # numbers, or absent from a summary that lacks them
            values[k] = [s[k] for s in summaries if isinstance(s.get(k), (int, float)) and not isinstance(s[k], bool)]
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
    extra = published_columns(sweep, table)
    if extra:
        lines[0] += " published SST / Quora / STS r | published overall | rank published / minbert |"
        lines[1] += "---|---|---|"
    for r in table:
        cells = [fmt(r.mean.get(k), r.std.get(k)) for k, _ in present]
        wall = f"{r.mean['wall_time_s'] / 60:.1f} min" if "wall_time_s" in r.mean else "-"
        steps = f"{r.mean['steps']:.0f}" if "steps" in r.mean else "-"
        line = f"| {r.name} | {r.n} | " + " | ".join(cells) + f" | {delta(r, base)} | {wall} | {steps} |"
        lines.append(line + extra.get(r.name, ""))
    lines.append("")
    lines.append(
        "mean ± sample std over seeds; Δ: difference of means ± its standard error, * where it exceeds twice the "
        "standard error (beyond seed noise at this n)."
    )
    if extra:
        lines.append(
            "Published: the report's dev numbers (its checkpoint, data and budget); overall on CS224N's scale, "
            f"{SCALES['cs224n']}, as minbert's, with the report's own number in brackets where it used another "
            "scale. Rank: 1 = best overall among the rows with published numbers that have finished here."
        )
    md = "\n".join(lines)
    sweep.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep.out / f"{sweep.report}.md", md + "\n")
    write_csv(table, present, sweep.out / f"{sweep.report}.csv")
    chart(table, present, sweep.out / f"{sweep.report}.png")
    return md


def published_columns(sweep: Sweep, table: list[Row]) -> dict[str, str]:
    """Each row's published cells (numbers, overall on CS224N's scale, rank among the published and among ours);
    {} when the sweep has no published numbers."""
    pub = {r.name: sweep.published[r.name] for r in table if r.name in sweep.published}
    if not pub:
        return {}
    ranked = [r for r in table if r.name in pub and "overall" in r.mean]
    ours = rank({r.name: r.mean["overall"] for r in ranked})
    theirs = rank({r.name: published_overall(pub[r.name]) for r in ranked})
    out = {}
    for r in table:
        p = pub.get(r.name)
        out[r.name] = (
            f" {p['sst']:.3f} / {p['quora']:.3f} / {p['sts']:.3f} | {published_cell(p)} | "
            f"{theirs.get(r.name, '-')} / {ours.get(r.name, '-')} |"
            if p
            else " - | - | - |"
        )
    return out


def write_csv(table: list[Row], present, path: Path) -> None:
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
            + [r.mean.get("wall_time_s"), r.mean.get("steps")]
        )
    atomic_write_text(path, buf.getvalue())


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
        # points, not bars: the axis starts near the values, where a bar's length would overstate a difference
        ax.errorbar(means, y, xerr=stds, fmt="o", color="tab:blue", capsize=3)
        if not math.isnan(means[0]):  # the first variant, the one the table's differences are taken from
            ax.axvline(means[0], color="0.5", linestyle="--", linewidth=0.8)
        lo = np.nanmin(np.array(means) - np.array(stds))
        hi = np.nanmax(np.array(means) + np.array(stds))
        ax.set_xlim(lo - 0.15 * (hi - lo + 1e-3), hi + 0.15 * (hi - lo + 1e-3))
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))  # a narrow panel: few ticks, or their labels run together
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([f"{r.name} (n={r.n})" for r in table], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"dev metrics, mean ± std over seeds (dashed: {table[0].name})", fontsize=10)
    save_figure(fig, path)
