"""`minbert` command line. Each subcommand's flags are generated from its config dataclass, so a config key and
its flag never drift apart: `--batch-size 16` and `batch_size=16` set the same field."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import signal
import sys
from typing import Literal, get_args, get_origin, get_type_hints

from minbert import allocator
from minbert.config import apply_overrides, convert, from_dict, load_yaml
from minbert.errors import MinbertError

log = logging.getLogger(__name__)


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, flag = hints[f.name], "--" + f.name.replace("_", "-")
        if tp is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default {f.default})"
            )
        elif get_origin(tp) is Literal:
            parser.add_argument(flag, choices=get_args(tp), default=None, help=f"(default {f.default})")
        elif tp in (int, float, str):
            parser.add_argument(flag, type=tp, default=None, help=f"(default {f.default!r})")


def config_from_args(cls, args: argparse.Namespace, yaml_path: str | None = None):
    """YAML file, then `key=value` overrides, then explicit flags (which win)."""
    data = apply_overrides(load_yaml(yaml_path) if yaml_path else {}, list(getattr(args, "overrides", [])))
    hints = get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = convert(hints[f.name], value, "--" + f.name.replace("_", "-"))  # named as typed
    return from_dict(cls, data)


def cmd_classify(args) -> int:
    from minbert.classify import ClassifyConfig, classify

    classify(config_from_args(ClassifyConfig, args, args.config), overwrite=args.overwrite)
    return 0


def cmd_train(args) -> int:
    from pathlib import Path

    from minbert.multitask.config import TrainConfig
    from minbert.multitask.run import resume_config
    from minbert.multitask.train import train

    if args.resume:
        run = Path(args.resume)
        ignored = [f"CONFIG {args.config}"] if args.config and "=" not in args.config else []
        overrides = args.overrides + ([args.config] if args.config and "=" in args.config else [])
        ignored += [f"--checkpoint {args.checkpoint}"] * bool(args.checkpoint) + ["--budget"] * args.budget
        ignored += ["--overwrite"] * args.overwrite
        cfg = resume_config(run, overrides, args.data_dir, ignored)
        if (run / "summary.json").is_file():  # nothing left to do: its results stay as they are
            log.info(f"{run} finished already (summary.json); nothing to resume: a new run needs its own out=")
            return 0
        train(cfg, resume=run)
        return 0
    if not args.config:
        raise MinbertError("train needs a CONFIG file (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
    from minbert.config import load_config
    from minbert.data import choose_data_dir

    cfg = load_config(TrainConfig, args.config, args.overrides, budget=args.budget)
    if args.checkpoint:
        cfg = dataclasses.replace(cfg, checkpoint=args.checkpoint)
    typed = [o.split("=", 1)[1] for o in args.overrides if o.startswith("data_dir=")]  # typed here: as the flag
    data = choose_data_dir(args.data_dir or (typed[-1] if typed else None), cfg.data_dir)
    train(
        dataclasses.replace(cfg, data_dir=data),
        overwrite=args.overwrite,
    )
    return 0


def cmd_ensemble(args) -> int:
    from pathlib import Path

    from minbert.ensemble import ensemble

    thresholds = {}
    for item in args.min or []:
        task, _, value = item.partition("=")
        try:
            thresholds[task] = float(value)
        except ValueError:
            raise MinbertError(f"--min {item!r}: expected task=number, e.g. sst=0.53") from None
        if not -1 <= thresholds[task] <= 1:  # nan too: dev metrics are accuracies and correlations
            raise MinbertError(f"--min {item!r}: a dev accuracy or correlation, from -1 to 1 (e.g. sst=0.53)")
    ensemble([Path(r) for r in args.runs], Path(args.out), thresholds, args.data_dir, args.overwrite)
    return 0


def cmd_soup(args) -> int:
    from pathlib import Path

    from minbert.soup import soup

    soup([Path(r) for r in args.runs], Path(args.out), args.greedy, args.data_dir, args.overwrite, args.last)
    return 0


def cmd_sweep(args) -> int:
    from minbert.sweep import load_sweep, report, run_search, run_sweep, use_record

    only = [v for item in args.only or [] for v in item.split(",") if v]
    if args.only is not None and not only:
        raise MinbertError("--only: names no variant; give one or more, comma-separated (e.g. --only base,pcgrad)")
    sweep = load_sweep(args.sweep, args.budget, args.seeds, only, args.overrides)
    if sweep.search is not None and args.record is not None:
        raise MinbertError(
            "--record keeps a sweep's variant runs; a search's trials live in OUT/optuna.journal: leave it out"
        )
    if sweep.search is not None and args.report:  # the trials run so far, by folder
        trials = {d.name: () for d in sorted(sweep.out.glob("trial-*"))}
        print(report(dataclasses.replace(sweep, variants=trials)))
    elif sweep.search is not None:
        if args.dry_run:
            raise MinbertError("--dry-run lists a grid's runs; a search picks each trial's values as it goes")
        print(run_search(sweep))
    elif args.report:
        if args.record is not None:
            use_record(sweep, args.record)
        print(report(sweep))
    else:
        print(run_sweep(sweep, dry_run=args.dry_run, record=args.record))
    return 0


def cmd_analyze(args) -> int:
    from pathlib import Path

    from minbert.analysis import analyze

    for p in analyze(Path(args.run_dir), args.perplexity, args.data_dir, args.overwrite):
        print(p)
    return 0


def cmd_compare(args) -> int:
    from pathlib import Path

    from minbert.compare import compare

    print(compare([Path(r) for r in args.runs], Path(args.chart), args.overwrite))
    print(f"\nbar chart: {args.chart}")
    return 0


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from minbert.files import check_output, staged
    from minbert.multitask.evaluate import results_table, write_task_predictions
    from minbert.multitask.run import load_data, load_run

    if args.command == "predict" and args.input:
        return predict_text(args)
    if args.command == "predict" and (args.task or args.format):  # they shape --input's predictions only
        flag = f"--task {args.task}" if args.task else f"--format {args.format}"
        raise MinbertError(
            f"{flag}: only with --input FILE (new text to predict); without it, predict writes the run's CS224N "
            "dev and test files for every task"
        )
    predict = args.command == "predict"
    if predict and args.out:  # before any work; the run's own predictions folder is rewritten as a matter of course
        check_output(Path(args.out), args.overwrite, "predictions")
    r = load_run(args.run_dir, args.data_dir, precision=args.precision)
    splits = ("dev",) if args.command == "evaluate" else ("dev", "test")
    data = load_data(r.cfg, r.tok, splits)
    rows, outputs = {}, {}
    for split in splits:
        metrics, outputs[split] = r.runner.evaluate(data[split])
        if metrics:
            rows[f"{split} (epoch {r.best['epoch']})"] = metrics
    if predict:  # all files or none
        out = Path(args.out) if args.out else r.dir / "predictions"
        with staged(out, mine=not args.out) as tmp:  # the run's own predictions folder is rewritten
            written = [
                p
                for s in splits
                for p in write_task_predictions(tmp, s, data[s], outputs[s], r.model.specs, r.cfg.prediction_files)
            ]
        for p in written:
            print(out / p.relative_to(tmp))
    print(results_table(rows, r.model.specs))
    return 0


def predict_text(args) -> int:
    """`minbert predict RUN --task T --input FILE|-`: predictions for new text, one line each."""
    import io
    from pathlib import Path

    from minbert.api import load, read_inputs, write_outputs
    from minbert.files import atomic_write_text, check_writable

    if not args.task:
        raise MinbertError("predict --input needs --task (one of the run's tasks, e.g. --task sst)")
    out = Path(args.out) if args.out else None
    if out is not None:  # a file: refused if it exists (unless --overwrite), written whole or not at all
        if out.is_dir():
            raise MinbertError(f"--out {out}: is a folder; with --input, --out names the predictions file")
        if args.input not in (None, "-") and out.exists() and out.resolve() == Path(args.input).resolve():
            raise MinbertError(f"--out {out}: is the --input file; name another file for the predictions")
        if out.exists() and not args.overwrite:
            raise MinbertError(f"--out {out}: exists; choose a new file, or add --overwrite to replace it")
        check_writable(out.parent, "another --out file")
    model = load(args.run_dir, precision=args.precision)  # first: the run's config may define its own tasks
    if args.task not in model.tasks:
        raise MinbertError(f"--task {args.task}: this run was trained on {', '.join(model.tasks)}")
    inputs = read_inputs(args.input, model.specs[args.task].pair, args.task)
    preds = model.predict(args.task, inputs)
    if out is not None:
        text = io.StringIO(newline="")
        write_outputs(inputs, preds, args.format or "jsonl", text)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text.getvalue())
        print(f"{len(preds)} predictions in {args.out}", file=sys.stderr)
    else:
        write_outputs(inputs, preds, args.format or "jsonl", sys.stdout)
    return 0


def cmd_export(args) -> int:
    from pathlib import Path

    from minbert.export import export
    from minbert.files import check_output
    from minbert.multitask.run import load_run

    check_output(Path(args.out), args.overwrite, "export")  # before the run loads
    run = load_run(args.run_dir, device="cpu")
    for path in export(run, Path(args.out), args.format, args.task, args.overwrite, args.int8):
        print(path)
    return 0


def cmd_plot(args) -> int:
    from pathlib import Path

    from minbert.files import check_new_files
    from minbert.plot import plot_files, plot_run

    run = Path(args.run_dir)
    check_new_files(plot_files(run), args.overwrite, "another run, or move the earlier plots away")  # before any work
    for p in plot_run(run):
        print(p)
    return 0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of steps")
    return value


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder of the CS224N data files; wins over $MINBERT_DATA, which wins over "
        "the config's (or the run's saved) data_dir, which wins over ../shared/data",
    )


def build_parser() -> argparse.ArgumentParser:
    from minbert.classify import ClassifyConfig

    p = argparse.ArgumentParser(prog="minbert", description="minBERT: fine-tune one BERT encoder on sentence tasks")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser(
        "classify",
        help="single-task sentiment classifier (SST-5 or CFIMDB), frozen or fine-tuned",
        description="--preset handout: the handout's settings (10 epochs, batch size 8, dropout 0.3, lr 1e-3 frozen, "
        "1e-5 finetune) in place of the defaults (4 epochs SST / 2 CFIMDB / 10 frozen, batch 32, lr 5e-5 finetune); "
        "a flag or key=value given beside it wins.",
    )
    c.add_argument("--config", help="YAML file of ClassifyConfig keys")
    add_config_flags(c, ClassifyConfig)
    c.add_argument(
        "--bf16", action="store_const", const="bf16", dest="precision", help="bf16 autocast (precision=bf16)"
    )
    c.add_argument("--overwrite", action="store_true", help="replace the run already in --out (default: refuse)")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=2e-5")
    c.set_defaults(func=cmd_classify)

    t = sub.add_parser("train", help="multitask training from a YAML config (see configs/)")
    t.add_argument("config", nargs="?", help="YAML file of TrainConfig keys")
    t.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. tasks.sst.batch_size=16"
    )
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    t.add_argument("--budget", action="store_true", help="apply the config's budget section (bounded CPU run)")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in out= (default: refuse)")
    t.add_argument(
        "--checkpoint", metavar="DIR", help="a Hugging Face BERT directory to start from (as checkpoint=DIR)"
    )
    add_data_dir(t)
    t.set_defaults(func=cmd_train)
    _add_run_commands(sub)
    _add_study_commands(sub)
    return p


def _add_run_commands(sub) -> None:
    """The commands that use a finished run: evaluate, predict, plot."""
    for name, text in (
        ("evaluate", "dev metrics of a run's best checkpoint"),
        ("predict", "write dev and test prediction files of a run's best checkpoint"),
    ):
        e = sub.add_parser(name, help=text)
        e.add_argument("run_dir")
        if name == "predict":
            e.add_argument(
                "--out",
                help="folder for the CS224N prediction files (default RUN_DIR/predictions); with "
                "--input, the file for the predictions (default stdout)",
            )
            e.add_argument(
                "--input",
                metavar="FILE",
                help="predict new text: one sentence per line (pairs: two "
                "tab-separated sentences) or JSON lines; - reads stdin",
            )
            e.add_argument("--task", help="with --input: which of the run's tasks to predict")
            e.add_argument("--format", choices=("jsonl", "csv"), help="with --input (default jsonl)")
            e.add_argument("--overwrite", action="store_true", help="replace files an earlier predict wrote in --out")
        e.add_argument(
            "--precision",
            choices=("auto", "fp32", "bf16", "fp16", "int8"),
            help="what inference runs in (default: the run's); int8: dynamic int8 quantization, CPU only",
        )
        add_data_dir(e)
        e.set_defaults(func=cmd_evaluate)
    ex = sub.add_parser(
        "export",
        help="write a run's best checkpoint for transformers, sentence-transformers or onnxruntime",
        description="hf: OUT is the shared encoder (transformers.AutoModel) and OUT/<task>/ each sentence or "
        "cross-encoder task as a sequence classifier; sentence-transformers: OUT loads with SentenceTransformer(OUT) "
        "(--task: whose pooling and cosine-head layers; default the cosine-headed task); onnx: OUT/<task>.onnx and "
        "OUT/embed.onnx, checked against PyTorch with onnxruntime. See src/minbert/export/.",
    )
    ex.add_argument("run_dir")
    ex.add_argument("out", help="a new (or empty) folder")
    ex.add_argument("--format", required=True, choices=("hf", "sentence-transformers", "onnx"))
    ex.add_argument("--task", help="only this task (sentence-transformers: whose embeddings)")
    ex.add_argument("--int8", action="store_true", help="onnx: also <task>.int8.onnx, ONNX Runtime's int8 models")
    ex.add_argument("--overwrite", action="store_true", help="replace what an earlier export wrote in OUT")
    ex.set_defaults(func=cmd_export)
    pl = sub.add_parser("plot", help="PNG plots of a run's metrics.jsonl (loss per task, dev metrics per epoch)")
    pl.add_argument("run_dir")
    pl.add_argument("--overwrite", action="store_true", help="replace the plots already there (default: refuse)")
    pl.set_defaults(func=cmd_plot)


def _add_study_commands(sub) -> None:
    """The commands over several runs: ensemble, soup, sweep, analyze, compare."""
    en = sub.add_parser("ensemble", help="average the soft outputs of several runs' best checkpoints")
    en.add_argument("runs", nargs="+", metavar="RUN_DIR")
    en.add_argument("--out", required=True, help="folder for the ensemble's metrics and predictions")
    en.add_argument("--min", nargs="*", metavar="task=value", help="per-task dev thresholds a run must reach to join")
    en.add_argument("--overwrite", action="store_true", help="replace an earlier ensemble's files in --out")
    add_data_dir(en)
    en.set_defaults(func=cmd_ensemble)

    so = sub.add_parser("soup", help="average the weights of runs fine-tuned from one checkpoint: one model")
    so.add_argument("runs", nargs="+", metavar="RUN_DIR")
    so.add_argument("--out", required=True, help="folder for the soup: a run every command takes")
    so.add_argument("--greedy", action="store_true", help="a run joins only if the dev overall does not fall")
    so.add_argument(
        "--last", type=int, default=0, metavar="K", help="average one run's last K epochs (trained with keep_epochs)"
    )
    so.add_argument("--overwrite", action="store_true", help="replace an earlier soup in --out")
    add_data_dir(so)
    so.set_defaults(func=cmd_soup)

    sw = sub.add_parser(
        "sweep",
        help="variants x seeds of one config, run one after another (resumable), then mean +- std per variant",
        description="Runs every (variant, seed) of SWEEP.yaml with minbert train, one after another; finished runs are "
        "skipped and interrupted ones resumed, so the same command continues a sweep. Then writes OUT/results.md, "
        "results.csv and results.png: dev metrics as mean +- sample std over seeds per variant, and each variant's "
        "difference from the first one with its standard error. See src/minbert/sweep.py for the file's keys.",
    )
    sw.add_argument("sweep", metavar="SWEEP.yaml", help="base config, variants or grid, seeds, out")
    sw.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for every run")
    sw.add_argument(
        "--budget",
        type=positive_int,
        metavar="STEPS",
        help="bound every run to STEPS optimizer steps (each variant keeps its epochs); runs go to OUT-STEPSsteps",
    )
    sw.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="run these seeds instead of the file's")
    sw.add_argument("--only", action="append", metavar="VARIANT[,VARIANT]", help="run (and report) these variants")
    sw.add_argument("--dry-run", action="store_true", help="list the runs and their state without training")
    sw.add_argument("--report", action="store_true", help="only rebuild the table and chart from finished runs")
    keep = "keep finished runs' config.yaml, summary.json, metrics.jsonl in DIR (in git); restore them from there"
    sw.add_argument("--record", metavar="DIR", help=keep)
    sw.set_defaults(func=cmd_sweep)

    an = sub.add_parser("analyze", help="SST confusion matrix, t-SNE of SST embeddings, gradient-conflict plot")
    an.add_argument("run_dir")
    an.add_argument(
        "--perplexity", type=float, default=30.0, help="t-SNE perplexity, 1 to 100 (report 001 used 30 and 50)"
    )
    an.add_argument("--overwrite", action="store_true", help="replace the files already there (default: refuse)")
    add_data_dir(an)
    an.set_defaults(func=cmd_analyze)

    co = sub.add_parser("compare", help="markdown table and bar chart of several runs")
    co.add_argument("runs", nargs="+", metavar="RUN_DIR")
    co.add_argument("--chart", default="compare.png", help="where to write the bar chart, a .png (default compare.png)")
    co.add_argument("--overwrite", action="store_true", help="replace an existing --chart file (default: refuse)")
    co.set_defaults(func=cmd_compare)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """argparse stops collecting positionals at the first option, so `train FILE --budget a=b` would leave `a=b`
    unrecognized: such key=value words join the overrides wherever they stand."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [w for w in extra if w.startswith("-") or "=" not in w]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    """The one boundary every command runs inside: a MinbertError (the user's input) or an OSError (the operating
    system saying no: a full disk, a permission, a path that is not a folder) is one `minbert: error:` line and exit
    2; Ctrl-C or SIGTERM stop with exit 130 after the command's cleanup ran. Anything else - an OSError that names
    no path and no known refusal included - is a bug of ours and keeps its traceback."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    try:
        if argv is None:  # started as a program: MINBERT_ALLOCATOR=jemalloc re-executes before torch is imported
            allocator.reexecute()
        return args.func(args)
    except MinbertError as e:
        print(f"minbert: error: {e}", file=sys.stderr)  # one line: MinbertError joins its whitespace
        return 2
    except KeyboardInterrupt:
        print(f"minbert: interrupted{_RESUME if args.command == 'train' else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `minbert predict ... | head`: the reader left; nothing to say
        sys.stderr.close()
        return 0
    except OSError as e:
        if e.filename is None and e.errno not in OS_HINTS:  # names no path and is no known refusal: a bug of ours
            raise
        print(f"minbert: error: {os_message(e)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def os_message(e: OSError) -> str:
    """One line for an OSError: the path, what the system said, what to do."""
    where = e.filename if e.filename is not None else ""
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    what = e.strerror or str(e) or type(e).__name__
    return f"{where}: {what}; {OS_HINTS.get(e.errno, _CHECK)}" if where else f"{what}; {OS_HINTS.get(e.errno, _CHECK)}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a scheduler's stop, `kill`): unwind as Ctrl-C does, so locks and temp files go


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


_RESUME = " (a run continues from its last checkpoint with `minbert train --resume RUN_DIR`)"
_WRITABLE = "choose a folder you may write to (out=, --out) or fix its permissions"
_SPACE = "free some space; a run continues from its last complete checkpoint with `minbert train --resume RUN_DIR`"
_CHECK = "check the path and try again"
OS_HINTS = {
    errno.EACCES: _WRITABLE,
    errno.EPERM: _WRITABLE,
    errno.EROFS: _WRITABLE,
    errno.ENOSPC: _SPACE,
    errno.EDQUOT: _SPACE,
    errno.ENOENT: "check the path (a folder on the way may be missing)",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "that path is a folder; name a file",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or close other programs",
}


if __name__ == "__main__":
    sys.exit(main())
