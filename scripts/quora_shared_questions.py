"""How often Quora's paraphrase pairs share a question with another paraphrase pair of the training split: why the
in-batch losses never count a repeated text as a negative (docs/TECHNIQUES.md, "In-batch losses").

    python scripts/quora_shared_questions.py [--data-dir DIR]   # default: $MINBERT_DATA or ../shared/data

Reads the training split as training does (data/datasets.py's load_split). A text is its exact string. Prints the
share of positive pairs whose first question is another positive pair's first question, and the share that share
either of their questions with another positive pair (on either side)."""

from __future__ import annotations

import argparse
from collections import Counter

from minbert.data.datasets import DATASETS, load_split
from minbert.data.readers import data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="folder of the CS224N data files (default: $MINBERT_DATA or ../shared/data)")
    args = ap.parse_args()
    pos = [e.texts for e in load_split(DATASETS["quora"], "train", data_dir(args.data_dir)) if e.label == 1]
    first = Counter(a for a, _ in pos)
    either = Counter(t for pair in pos for t in set(pair))
    share_first = sum(first[a] > 1 for a, _ in pos) / len(pos)
    share_either = sum(either[a] > 1 or either[b] > 1 for a, b in pos) / len(pos)
    print(f"{len(pos)} positive pairs in Quora's training split")
    print(f"first question shared with another positive pair: {share_first:.1%}")
    print(f"either question shared with another positive pair: {share_either:.1%}")


if __name__ == "__main__":
    main()
