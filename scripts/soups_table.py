"""The soups of issue 43's study as docs/RESULTS.md's table: for each group of ingredients kept in
docs/study/soups/NAME/ (scripts/mtl-study.sh soups), its best single run, uniform soup, greedy soup and ensemble,
or, for one run's last epochs (`minbert soup RUN --last K`), the run and the averages of its last 2 and 3 epochs;
dev metrics; a group built at several seeds (NAME-seedK) as mean +- sample std over them.

    python scripts/soups_table.py [--record docs/study]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

METRICS = ("sst/acc", "quora/acc", "sts/pearson", "overall")
KINDS = (
    ("best", "best single run"),
    ("uniform", "uniform soup"),
    ("greedy", "greedy soup (on dev)"),
    ("ensemble", "ensemble"),
    ("last2", "average of its last 2 epochs"),
    ("last3", "average of its last 3 epochs"),
)
COMPLETE = ({"uniform", "greedy", "ensemble"}, {"last2", "last3"})  # the soups a group has when it is finished


def best_single(record: Path, summary: dict) -> dict:
    """Dev metrics of the soup's best ingredient, from the study's record of that run (an epoch checkpoint's run:
    that run, at its best epoch)."""
    run = max(summary["ingredients"], key=summary["ingredients"].get).split("/checkpoints/")[0]
    kept = record / Path(run).relative_to("runs/study") / "summary.json"
    return json.loads(kept.read_text())["dev"]


def groups(record: Path) -> dict[str, list[dict[str, dict]]]:
    """group name -> one {kind: dev metrics} per seed (one for a group without seeds), complete soups only."""
    out = defaultdict(list)
    for folder in sorted((record / "soups").iterdir()):
        kinds = {k: folder / k / "summary.json" for k, _ in KINDS if (folder / k / "summary.json").is_file()}
        if set(kinds) not in COMPLETE:
            continue
        summaries = {k: json.loads(p.read_text()) for k, p in kinds.items()}
        dev = {k: s["dev"] for k, s in summaries.items()}
        dev["best"] = best_single(record, next(iter(summaries.values())))
        m = re.fullmatch(r"(.+)-seed\d+", folder.name)
        out[m.group(1) if m else folder.name].append(dev)
    return out


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(record: Path) -> str:
    lines = ["| ingredients | n | one model from many | SST acc | Quora acc | STS r | overall |", "|---" * 7 + "|"]
    for name, seeds in groups(record).items():
        for kind, label in KINDS:
            if kind not in seeds[0]:
                continue
            if kind == "best" and "last2" in seeds[0]:
                label = "the run itself (its best epoch)"
            cells = [cell([s[kind][m] for s in seeds]) for m in METRICS]
            lines.append(f"| {name} | {len(seeds)} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", type=Path, default=Path("docs/study"))
    print(table(ap.parse_args().record))


if __name__ == "__main__":
    main()
