"""The soups of issue 43's study as docs/RESULTS.md's table: for each group of ingredients kept in
docs/study/soups/NAME/ (scripts/mtl-study.sh soups), its best single run, uniform soup, greedy soup and ensemble,
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
)


def best_single(record: Path, summary: dict) -> dict:
    """Dev metrics of the soup's best ingredient, from the study's record of that run."""
    run = max(summary["ingredients"], key=summary["ingredients"].get)
    kept = record / Path(run).relative_to("runs/study") / "summary.json"
    return json.loads(kept.read_text())["dev"]


def groups(record: Path) -> dict[str, list[dict[str, dict]]]:
    """group name -> one {kind: dev metrics} per seed (one for a group without seeds), complete soups only."""
    out = defaultdict(list)
    for folder in sorted((record / "soups").iterdir()):
        kinds = {k: folder / k / "summary.json" for k, _ in KINDS if k != "best"}
        if not all(p.is_file() for p in kinds.values()):
            continue
        summaries = {k: json.loads(p.read_text()) for k, p in kinds.items()}
        dev = {k: s["dev"] for k, s in summaries.items()}
        dev["best"] = best_single(record, summaries["uniform"])
        m = re.fullmatch(r"(.+)-seed\d+", folder.name)
        out[m.group(1) if m else folder.name].append(dev)
    return out


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(record: Path) -> str:
    lines = ["| ingredients | seeds | one model from many | SST acc | Quora acc | STS r | overall |", "|---" * 7 + "|"]
    for name, seeds in groups(record).items():
        for kind, label in KINDS:
            cells = [cell([s[kind][m] for s in seeds]) for m in METRICS]
            lines.append(f"| {name} | {len(seeds)} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", type=Path, default=Path("docs/study"))
    print(table(ap.parse_args().record))


if __name__ == "__main__":
    main()
