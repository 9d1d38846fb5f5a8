"""STS-B dev Pearson r of a checkpoint before any training: the cosine of two sentences' embeddings against the
0-5 label, for mean pooling and for BERT's pooler output, pooled as the task heads pool (`minbert.model.bert.pool`)
(docs/REPORTS.md: why a cosine STS head starts high with the embedded checkpoint).

    python scripts/zero_shot_sts.py [--checkpoint DIR] [--data-dir DIR]   # default: the embedded all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import sys

import torch

from minbert.data.datasets import DATASETS, load_split
from minbert.data.readers import data_dir
from minbert.data.tokenizer import Tokenizer
from minbert.errors import MinbertError
from minbert.model import BertModel
from minbert.model.bert import pool
from minbert.model.loading import resolve_checkpoint

POOLINGS = {"mean": "mean pooling", "pooler": "pooler output"}


@torch.no_grad()
def embed(model: BertModel, tok: Tokenizer, sentences: list[str]) -> dict[str, torch.Tensor]:
    """{pooling: (N, H) embeddings} of the sentences, in batches of 64, cut at 128 tokens."""
    out: dict[str, list[torch.Tensor]] = {p: [] for p in POOLINGS}
    for i in range(0, len(sentences), 64):
        ids = [torch.tensor(x) for x in tok.encode(sentences[i : i + 64], 128)]
        batch = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=tok.pad_id)  # (B, T)
        mask = (batch != tok.pad_id).long()
        hidden = model(batch, mask)[0]  # (B, T, H)
        for p in POOLINGS:
            out[p].append(pool(hidden, mask, p, model.pooler))
    return {p: torch.cat(v) for p, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="default", help="a Hugging Face BERT folder (default: the embedded one)")
    ap.add_argument("--data-dir", help="folder of the CS224N data files (default: $MINBERT_DATA or ../shared/data)")
    args = ap.parse_args(argv)
    try:
        path = resolve_checkpoint(args.checkpoint)
        model, tok = BertModel.from_pretrained(path).eval(), Tokenizer.from_pretrained(path)
        rows = load_split(DATASETS["sts"], "dev", data_dir(args.data_dir))  # the files and columns training reads
    except MinbertError as e:
        print(f"zero_shot_sts: error: {e}", file=sys.stderr)
        return 2
    labels = torch.tensor([r.label for r in rows], dtype=torch.float64)
    a, b = embed(model, tok, [r.texts[0] for r in rows]), embed(model, tok, [r.texts[1] for r in rows])
    where = "the embedded all-MiniLM-L6-v2" if args.checkpoint == "default" else args.checkpoint
    print(f"{where}: STS-B dev ({len(rows)} pairs), Pearson r of cos(u, v) with the label, no training")
    for p in POOLINGS:
        cos = torch.nn.functional.cosine_similarity(a[p], b[p]).double()
        print(f"  {POOLINGS[p]}: {torch.corrcoef(torch.stack([cos, labels]))[0, 1].item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
